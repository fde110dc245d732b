"""Every setting modelmill reads, in one place: the only module that looks at environment variables.

Each field is also a CLI flag where it makes sense; the README's table lists them all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _aws(own: str, *standard: str) -> AliasChoices:
    """Read a setting from MODELMILL_OWN, else from the standard AWS variables, in that order."""
    return AliasChoices(f"MODELMILL_{own}", *standard)


class Settings(BaseSettings):
    """modelmill's settings; environment variables are the field names with a MODELMILL_ prefix."""

    # populate_by_name: a child process rebuilds its settings from model_dump()'s field names,
    # also for the fields that read the standard AWS variables under their own names.
    model_config = SettingsConfigDict(
        env_prefix="MODELMILL_", extra="ignore", populate_by_name=True
    )

    data_dir: Path = Field(Path("modelmill-data"), description="Where the database and blobs live.")
    database_url: str = Field(
        "", description="SQLAlchemy URL; empty means SQLite at DATA_DIR/modelmill.db."
    )
    blob_url: str = Field(
        "",
        description="Blob store: s3://BUCKET/PREFIX for an S3-compatible store; empty means the "
        "folder DATA_DIR/blobs.",
    )
    s3_endpoint_url: str = Field(
        "",
        validation_alias=_aws("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        description="S3 endpoint (MinIO, R2, ...); empty means AWS S3.",
    )
    s3_region: str = Field(
        "",
        validation_alias=_aws("S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        description="Region of the S3 bucket; empty means us-east-1.",
    )
    s3_path_style: bool = Field(
        False, description="Address the bucket as ENDPOINT/BUCKET (MinIO) not BUCKET.ENDPOINT."
    )
    s3_access_key_id: str = Field(
        "",
        validation_alias=_aws("S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        description="S3 access key; empty means the machine's role (instance, web identity).",
    )
    s3_secret_access_key: str = Field(
        "",
        validation_alias=_aws("S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        description="Secret of s3_access_key_id.",
    )
    s3_session_token: str = Field(
        "",
        validation_alias=_aws("S3_SESSION_TOKEN", "AWS_SESSION_TOKEN"),
        description="Session token of temporary S3 credentials.",
    )
    blob_direct_links: bool = Field(
        False,
        description="Blob links are the S3 store's presigned URLs (clients can reach the S3 "
        "endpoint); otherwise the server streams blobs.",
    )
    blob_link_expiry_s: int = Field(
        3600, gt=0, le=7 * 24 * 3600, description="How long a presigned S3 link stays valid."
    )
    host: str = Field("127.0.0.1", description="Address the HTTP and gRPC servers bind to.")
    http_port: int = Field(8080, description="Port of the REST API and web UI.")
    grpc_port: int = Field(18080, description="Port of the gRPC API.")
    public_url: str = Field(
        "", description="Base URL clients reach the HTTP server at (links to logs, blobs)."
    )
    tls_cert: Path | None = Field(None, description="PEM certificate; with tls_key, gRPC uses TLS.")
    tls_key: Path | None = Field(None, description="PEM private key for tls_cert.")
    workers: int = Field(1, description="Training worker processes `serve` starts (0 for none).")
    executor: Literal["local", "ray"] = Field(
        "local",
        description="Where a worker runs its jobs: local (a child process) or ray (a Ray task, "
        "with the job's CPU, GPU and memory request).",
    )
    ray_address: str = Field(
        "",
        description="Ray cluster to join (ray://HOST:10001, HOST:6379 or auto) with EXECUTOR=ray; "
        "empty starts a local Ray in the worker.",
    )
    ray_train_workers: int = Field(
        1,
        ge=1,
        description="With EXECUTOR=ray, the workers one training runs on through Ray Train's "
        "TorchTrainer (torch DDP: gloo on CPUs, NCCL with a GPU each); 1 trains in one task.",
    )
    job_threads: int = Field(
        0, ge=0, description="CPU threads one job computes with; 0 shares the cores among WORKERS."
    )
    secret_key: str = Field(
        "", description="Signs links and sessions; empty means a key kept in DATA_DIR/secret.key."
    )
    link_ttl_s: float = Field(
        3600.0, gt=0, description="How long a signed link (blob, train log) works, in seconds."
    )
    weights_dir: Path | None = Field(
        None, description="Pretrained weights folder; empty means DATA_DIR/weights."
    )
    device: str = Field("auto", description="Training device: auto, cpu or cuda.")
    gpu_memory_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of a GPU's memory one job may use; 0 shares it among WORKERS.",
    )
    embed_on_upload: bool = Field(
        True, description="Compute base-model embeddings of new inputs in the background."
    )
    job_lease_s: float = Field(30.0, description="A worker that is silent this long loses its job.")
    job_max_attempts: int = Field(3, description="Attempts before a job fails for good.")
    price_per_hour_usd: float = Field(
        4.0, ge=0, description="Hourly price training estimates show their cost at."
    )
    allow_url_inputs: bool = Field(False, description="Let inputs name a URL the server fetches.")
    url_allowed_hosts: str = Field(
        "",
        description="Comma-separated hosts or networks (10.0.0.0/8) URL inputs may reach although "
        "they are loopback, private or link-local; empty means public addresses only.",
    )
    url_timeout_s: float = Field(10.0, description="Time limit for fetching one URL input.")
    max_request_bytes: int = Field(
        256 * 1024 * 1024,
        gt=0,
        description="Largest HTTP request body (REST calls, web uploads), in bytes.",
    )
    max_input_bytes: int = Field(20_000_000, description="Largest image or fetched file, in bytes.")
    max_image_pixels: int = Field(
        89_478_485, description="Largest image, in pixels (guards decompression bombs)."
    )
    max_text_chars: int = Field(100_000, description="Longest text input, in characters.")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'modelmill.db').resolve()}"

    @property
    def resolved_blob_url(self) -> str:
        return self.blob_url or f"file://{(self.data_dir / 'blobs').resolve()}"

    @property
    def resolved_job_threads(self) -> int:
        """Threads per job: workers that each took every core would fight over them."""
        return self.job_threads or max(1, (os.cpu_count() or 1) // max(self.workers, 1))

    @property
    def resolved_gpu_memory_fraction(self) -> float:
        """Workers that share a GPU each keep to their share of its memory."""
        return self.gpu_memory_fraction or 1.0 / max(self.workers, 1)

    @property
    def resolved_weights_dir(self) -> Path:
        return (self.weights_dir or self.data_dir / "weights").resolve()

    @property
    def resolved_public_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return (self.public_url or f"http://{host}:{self.http_port}").rstrip("/")
