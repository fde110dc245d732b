"""Shared fixtures: a real `modelmill serve` process per storage backend, keys made with the CLI,
and the official clarifai-grpc clients over gRPC and over its JSON (REST) channel.

Run: `.venv/bin/pytest tests/api tests/store tests/domain -q` (SQLite); add `-m postgres` with
MODELMILL_TEST_POSTGRES_URL=postgresql+psycopg://USER:PASSWORD@HOST:PORT/postgres for PostgreSQL.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from clarifai_grpc.channel.clarifai_channel import ClarifaiChannel
from clarifai_grpc.grpc.api import resources_pb2, service_pb2, service_pb2_grpc
from google.protobuf import message_factory

POSTGRES_URL_VARIABLE = "MODELMILL_TEST_POSTGRES_URL"
SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 10.0
BIND_ATTEMPTS = 3
OWNER = "alice"


# ---- servers -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One `modelmill serve` process and what a test needs to reach it."""

    data_dir: Path
    http_port: int
    grpc_port: int
    env: dict[str, str]
    database_url: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "server.log"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `modelmill ARGS --data-dir DIR` with the server's settings."""
        return subprocess.run(
            [sys.executable, "-m", "modelmill", *args, "--data-dir", str(self.data_dir)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def token(self, user: str, app: str | None = None) -> str:
        """A new key for `user` (limited to `app` when given), made by `modelmill token create`."""
        result = self.cli("token", "create", "--user", user, *(["--app", app] if app else []))
        assert result.returncode == 0, result.stderr + result.stdout
        return result.stdout.strip().splitlines()[-1]

    def revoke(self, key: str) -> None:
        result = self.cli("token", "revoke", key)
        assert result.returncode == 0, result.stderr + result.stdout

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, *extra_args: str) -> Server:
        """Start `modelmill serve` and wait for /health; on a port another process took between
        free_port() and the bind, try again on fresh ports."""
        try:
            for _ in range(BIND_ATTEMPTS):
                if self._start_once(extra_args):
                    return self
                self.http_port, self.grpc_port = free_port(), free_port()
        except BaseException:
            self.stop()  # never leave a server behind, even on Ctrl-C
            raise
        raise RuntimeError(f"modelmill serve found no free ports:\n{self.log()}")

    def _start_once(self, extra_args: tuple[str, ...]) -> bool:
        logged = len(self.log())
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "modelmill", "serve",
                    "--data-dir", str(self.data_dir),
                    "--host", "127.0.0.1",
                    "--http-port", str(self.http_port),
                    "--grpc-port", str(self.grpc_port),
                    *extra_args,
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.log()[logged:]
                if "Failed to bind" in output or "address already in use" in output:
                    return False
                raise RuntimeError(f"modelmill serve exited early:\n{output}")
            try:
                if requests.get(f"{self.http_url}/health", timeout=1).ok:
                    return True
            except requests.RequestException:  # not up yet, or a stranger holds the port
                pass
            time.sleep(0.1)
        raise RuntimeError(f"modelmill serve did not answer /health in time:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(SERVER_STOP_TIMEOUT_S)


def make_server(
    data_dir: Path, database_url: str = "", settings: dict[str, str] | None = None
) -> Server:
    """A server that is not started yet: its settings travel as MODELMILL_* variables, so the
    CLI run by `token()` sees the same database."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELMILL_")}
    env.update({"MODELMILL_WORKERS": "0", **(settings or {})})
    if database_url:
        env["MODELMILL_DATABASE_URL"] = database_url
    resolved = database_url or f"sqlite:///{(data_dir / 'modelmill.db').resolve()}"
    return Server(data_dir, free_port(), free_port(), env, resolved)


@pytest.fixture(scope="session")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start extra servers (other limits, TLS); every one is stopped when the session ends.

    >>> server = start_server({"MODELMILL_MAX_IMAGE_PIXELS": "10000"})
    """
    started: list[Server] = []

    def start(
        settings: dict[str, str] | None = None, *extra_args: str, database_url: str = ""
    ) -> Server:
        server = make_server(tmp_path_factory.mktemp("server"), database_url, settings)
        started.append(server)
        return server.start(*extra_args)

    yield start
    for server in started:
        server.stop()


# ---- storage backends --------------------------------------------------------------------------


def _postgres_admin(url: str) -> Any:
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return psycopg.connect(
        host=parsed.host or "127.0.0.1",
        port=parsed.port or 5432,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database or "postgres",
        autocommit=True,
    )


@dataclass
class PostgresServer:
    """The PostgreSQL server MODELMILL_TEST_POSTGRES_URL names; hands out fresh databases."""

    url: str
    created: list[str] = field(default_factory=list)

    def create_database(self) -> str:
        """CREATE a fresh database and return its SQLAlchemy URL."""
        from sqlalchemy.engine import make_url

        name = f"modelmill_test_{secrets.token_hex(6)}"
        with _postgres_admin(self.url) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with _postgres_admin(self.url) as connection:
            for name in self.created:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The PostgreSQL server for the `postgres` tier; skips when none is configured."""
    url = os.environ.get(POSTGRES_URL_VARIABLE, "")
    if not url:
        pytest.skip(f"set {POSTGRES_URL_VARIABLE} to run the PostgreSQL tier")
    server = PostgresServer(url)
    yield server
    server.drop_all()


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def server(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The shared server of this backend; tests stay apart by using an app each."""
    database_url = ""
    if backend == "postgres":
        database_url = request.getfixturevalue("postgres").create_database()
    server = make_server(tmp_path_factory.mktemp(f"server-{backend}"), database_url)
    server.start()
    yield server
    server.stop()


# ---- an S3-compatible server -------------------------------------------------------------------

S3_REGION = "us-east-1"
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "modelmill-test", "AWS_SECRET_ACCESS_KEY": "modelmill-test"}
MOTO_START_TIMEOUT_S = 30.0


@dataclass
class MotoServer:
    """moto's standalone S3 server on a loopback port, in a process of its own."""

    endpoint: str
    process: subprocess.Popen[bytes]

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=S3_REGION,
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def create_bucket(self) -> str:
        """A fresh, empty bucket: tests sharing the server stay apart."""
        name = f"modelmill-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, bucket: str, prefix: str = "blobs") -> dict[str, str]:
        """The variables that point a modelmill process at `bucket` on this server."""
        return {
            "MODELMILL_BLOB_URL": f"s3://{bucket}/{prefix}",
            "MODELMILL_S3_ENDPOINT_URL": self.endpoint,
            "MODELMILL_S3_REGION": S3_REGION,
            "MODELMILL_S3_PATH_STYLE": "true",
            **S3_CREDENTIALS,
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(SERVER_STOP_TIMEOUT_S)


def start_moto(log_path: Path) -> MotoServer:
    """Start `python -m moto.server` on a free loopback port; wait until it answers."""
    for _ in range(BIND_ATTEMPTS):
        port = free_port()
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = MotoServer(f"http://127.0.0.1:{port}", process)
        deadline = time.monotonic() + MOTO_START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                requests.get(server.endpoint, timeout=1)
                return server
            except requests.RequestException:
                time.sleep(0.1)
        server.stop()  # exited (port taken meanwhile) or silent: try a fresh port
    raise RuntimeError(f"moto's S3 server did not start:\n{log_path.read_text(errors='replace')}")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One S3-compatible server for the session; each test takes a bucket of its own."""
    server = start_moto(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


# ---- users, keys and apps ----------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    user_id: str
    key: str


@pytest.fixture(scope="session")
def owner(server: Server) -> Account:
    """The user every test acts as, with a key for all of its apps."""
    return Account(OWNER, server.token(OWNER))


def create_app(server: Server, account: Account, app_id: str | None = None) -> str:
    """A new app of `account`, made through the REST API (no gRPC channel involved)."""
    app_id = app_id or f"app-{secrets.token_hex(4)}"
    reply = requests.post(
        f"{server.http_url}/v2/users/{account.user_id}/apps",
        json={"apps": [{"id": app_id}]},
        headers={"Authorization": f"Key {account.key}"},
        timeout=10,
    ).json()
    assert reply["status"]["code"] == 10000, reply
    return app_id


@pytest.fixture
def app_id(server: Server, owner: Account) -> str:
    """A fresh, empty app for this test."""
    return create_app(server, owner)


# ---- clients -----------------------------------------------------------------------------------


def make_stub(server: Server, transport: str) -> service_pb2_grpc.V2Stub:
    """A V2 stub over a new channel. The stub must be built right after its channel: clarifai-grpc
    picks the response decoder from the channel created last."""
    if transport == "grpc":
        channel = ClarifaiChannel.get_insecure_grpc_channel(base="127.0.0.1", port=server.grpc_port)
    else:
        channel = ClarifaiChannel.get_json_channel(base_url=server.http_url)
    return service_pb2_grpc.V2Stub(channel)


class Api:
    """The clarifai-grpc stub with a key and an app filled in.

    `api.PostInputs(inputs=[...])` builds the PostInputsRequest, sets `user_app_id` to this
    client's app unless given, and sends the key.
    """

    def __init__(self, server: Server, transport: str, key: str, user_id: str, app_id: str) -> None:
        self.server = server
        self.transport = transport
        self.key = key
        self.user_app_id = resources_pb2.UserAppIDSet(user_id=user_id, app_id=app_id)
        self.stub = make_stub(server, transport)

    @property
    def app_id(self) -> str:
        return self.user_app_id.app_id

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Key {self.key}"),)

    def call(self, name: str, request: Any = None, /, **fields: Any) -> Any:
        descriptor = service_pb2._V2.methods_by_name[name].input_type
        if request is None:
            request = message_factory.GetMessageClass(descriptor)(**fields)
        if "user_app_id" in descriptor.fields_by_name and not request.HasField("user_app_id"):
            request.user_app_id.CopyFrom(self.user_app_id)
        return getattr(self.stub, name)(request, metadata=self.metadata)

    def __getattr__(self, name: str) -> Any:
        if name not in service_pb2._V2.methods_by_name:
            raise AttributeError(name)
        return lambda request=None, /, **fields: self.call(name, request, **fields)


@pytest.fixture(params=["grpc", "rest"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def api(server: Server, owner: Account, app_id: str, transport: str) -> Api:
    """The owner's client on a fresh app, over this test's transport."""
    return Api(server, transport, owner.key, owner.user_id, app_id)


@pytest.fixture
def grpc_api(server: Server, owner: Account, app_id: str) -> Api:
    """The owner's client over gRPC only, for what only gRPC can send (raw bytes, bad metadata)."""
    return Api(server, "grpc", owner.key, owner.user_id, app_id)


@pytest.fixture
def connect(server: Server, transport: str) -> Any:
    """Another client on the same transport: `connect(key, user_id, app_id)`."""

    def make(key: str, user_id: str, app_id: str = "") -> Api:
        return Api(server, transport, key, user_id, app_id)

    return make


@pytest.fixture(scope="session")
def database(server: Server) -> Iterator[Any]:
    """The server's metadata database, for arranging rows no API call can make yet."""
    from modelmill.store.database import Database

    db = Database(server.database_url)
    yield db
    db.dispose()


class Http:
    """Raw REST calls with `requests`, for what the official client never sends.

    `http.post("inputs", json=...)` goes to /v2/users/USER/apps/APP/inputs; a path starting with
    "/" is used as it is.
    """

    def __init__(self, server: Server, key: str, user_id: str, app_id: str) -> None:
        self.server = server
        self.key = key
        self.app_path = f"/v2/users/{user_id}/apps/{app_id}"

    def url(self, path: str) -> str:
        return self.server.http_url + (path if path.startswith("/") else f"{self.app_path}/{path}")

    def request(self, method: str, path: str, **options: Any) -> requests.Response:
        headers = options.pop("headers", None)
        if headers is None:
            headers = {"Authorization": f"Key {self.key}"}
        return requests.request(method, self.url(path), headers=headers, timeout=30, **options)

    def get(self, path: str, **options: Any) -> requests.Response:
        return self.request("GET", path, **options)

    def post(self, path: str, **options: Any) -> requests.Response:
        return self.request("POST", path, **options)

    def patch(self, path: str, **options: Any) -> requests.Response:
        return self.request("PATCH", path, **options)

    def delete(self, path: str, **options: Any) -> requests.Response:
        return self.request("DELETE", path, **options)


@pytest.fixture
def http(server: Server, owner: Account, app_id: str) -> Http:
    """Raw REST access to this test's fresh app."""
    return Http(server, owner.key, owner.user_id, app_id)


def pytest_configure(config: pytest.Config) -> None:
    # clarifai-grpc's JSON channel calls FieldDescriptor.label, which protobuf 6 deprecates.
    config.addinivalue_line("filterwarnings", "ignore:label\\(\\) is deprecated:DeprecationWarning")
