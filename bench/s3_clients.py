"""boto3 vs obstore against an S3-compatible server on loopback (moto's standalone server in its
own process): put and get of 1 MB and 50 MB objects, MB/s and ms per object, side by side.

Run: .venv/bin/python bench/s3_clients.py [--small 20] [--large 3]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import boto3
import obstore
import requests
from botocore.config import Config
from obstore.store import S3Store

MB = 1024 * 1024
BUCKET = "bench"
CREDENTIALS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
REGION = "us-east-1"
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            requests.get(endpoint, timeout=1)
            return process, endpoint
        except requests.RequestException:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto server did not start")


def boto3_client(endpoint: str) -> tuple[Callable[[str, bytes], None], Callable[[str], bytes]]:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}),
        **CREDENTIALS,
    )

    def put(key: str, data: bytes) -> None:
        # upload_fileobj: the managed (multipart above 8 MB, threaded) upload a real store uses
        client.upload_fileobj(io.BytesIO(data), BUCKET, key)

    def get(key: str) -> bytes:
        buffer = io.BytesIO()
        client.download_fileobj(BUCKET, key, buffer)
        return buffer.getvalue()

    return put, get


def obstore_client(endpoint: str) -> tuple[Callable[[str, bytes], None], Callable[[str], bytes]]:
    store = S3Store(
        BUCKET,
        endpoint=endpoint,
        region=REGION,
        access_key_id=CREDENTIALS["aws_access_key_id"],
        secret_access_key=CREDENTIALS["aws_secret_access_key"],
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )

    def put(key: str, data: bytes) -> None:
        obstore.put(store, key, io.BytesIO(data))  # multipart above 5 MB chunks

    def get(key: str) -> bytes:
        return bytes(obstore.get(store, key).bytes())

    return put, get


def measure(
    put: Callable[[str, bytes], None], get: Callable[[str], bytes], size: int, count: int, tag: str
) -> tuple[float, float]:
    blobs = [os.urandom(size) for _ in range(count)]
    started = time.perf_counter()
    for i, data in enumerate(blobs):
        put(f"{tag}/{size}/{i}", data)
    put_s = time.perf_counter() - started
    started = time.perf_counter()
    for i, data in enumerate(blobs):
        assert get(f"{tag}/{size}/{i}") == data
    get_s = time.perf_counter() - started
    return put_s / count, get_s / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=20, help="1 MB objects per client")
    parser.add_argument("--large", type=int, default=3, help="50 MB objects per client")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per client")
    args = parser.parse_args()
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[0]
    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {load}, {os.cpu_count()} cores")
    process, endpoint = start_moto()
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **CREDENTIALS).create_bucket(
            Bucket=BUCKET
        )
        clients = {"boto3": boto3_client(endpoint), "obstore": obstore_client(endpoint)}
        results: dict[tuple[str, int, str], list[float]] = {}
        # Alternate the clients round by round so that a load change hits both alike.
        for round_ in range(args.rounds):
            for name, (put, get) in clients.items():
                for size, count in ((MB, args.small), (50 * MB, args.large)):
                    put_s, get_s = measure(put, get, size, count, f"{name}-{round_}")
                    results.setdefault((name, size, "put"), []).append(put_s)
                    results.setdefault((name, size, "get"), []).append(get_s)
        print("| client | object | put ms | put MB/s | get ms | get MB/s |")
        print("|---|---|---|---|---|---|")
        for name in clients:
            for size in (MB, 50 * MB):
                put_s = min(results[(name, size, "put")])
                get_s = min(results[(name, size, "get")])
                print(
                    f"| {name} | {size // MB} MB | {put_s * 1000:.0f} | {size / MB / put_s:.0f} "
                    f"| {get_s * 1000:.0f} | {size / MB / get_s:.0f} |"
                )
    finally:
        process.terminate()
        process.wait(10)


if __name__ == "__main__":
    main()
