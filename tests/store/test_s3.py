"""What only the S3 store does: its URL, and settings read from the standard AWS variables. The
cases every store shares are in tests/contract/test_blob_store.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import S3_CREDENTIALS, S3_REGION, MotoServer
from modelmill.services import Env
from modelmill.settings import Settings
from modelmill.store.blobs import open_blob_store
from modelmill.store.env import s3_options
from modelmill.store.s3 import BlobStoreUnavailable, S3BlobStore, S3Options


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://bucket/p?endpoint=x"])
def test_an_s3_url_without_a_bucket_or_with_options_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        open_blob_store(url, S3Options(endpoint_url="http://127.0.0.1:9"))


def test_the_url_names_the_bucket_and_the_prefix() -> None:
    store = open_blob_store("s3://models/team/a/", S3Options(endpoint_url="http://127.0.0.1:9"))

    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == ("models", "team/a")


def test_settings_read_the_standard_aws_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ENDPOINT_URL": "http://minio.lan:9000",
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "AKIA-standard",
        "AWS_SECRET_ACCESS_KEY": "secret-standard",
        "MODELMILL_S3_PATH_STYLE": "true",
    }.items():
        monkeypatch.setenv(name, value)

    assert s3_options(Settings()) == S3Options(
        endpoint_url="http://minio.lan:9000",
        region="eu-west-1",
        path_style=True,
        access_key_id="AKIA-standard",
        secret_access_key="secret-standard",
    )


def test_modelmill_s3_settings_win_over_the_aws_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("MODELMILL_S3_REGION", "auto")  # R2 wants "auto"

    settings = Settings()

    assert settings.s3_region == "auto"
    assert Settings(**settings.model_dump()).s3_region == "auto"  # as a job's child rebuilds it


@pytest.mark.s3
def test_a_missing_bucket_stops_a_process_at_start_saying_what_to_check(
    s3_server: MotoServer, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        blob_url="s3://no-such-bucket/models",
        s3_endpoint_url=s3_server.endpoint,
        s3_region=S3_REGION,
        s3_path_style=True,
        s3_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        s3_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )

    with pytest.raises(BlobStoreUnavailable, match="NoSuchBucket.*Check that the bucket exists"):
        Env.open(settings)
