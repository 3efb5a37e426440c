"""S3 for the storage contract suite: the real s3fs/botocore stack against a moto server on loopback.

One moto server per test session (started on first use, stopped at exit); each
``storage()`` gets a bucket of its own, so tests never see each other's objects.
"""
from __future__ import annotations

import atexit
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from soopervisor.storage import open_storage
from soopervisor.storage.base import Storage
from tests.backends import env

# Fake keys: every credential value is registered with the redactor, which then masks it in
# any text of the test session, so they must not look like ordinary words.
ACCESS_KEY = "AKIASOOPERVISORTEST1"
SECRET_KEY = "fake+secret/soopervisor-tests-0123456789"
REGION = "us-east-1"

_server = None
_lock = threading.Lock()


def endpoint() -> str:
    """The URL of the session's moto server, started on first use."""
    global _server
    with _lock:
        if _server is None:
            from moto.server import ThreadedMotoServer

            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            atexit.register(server.stop)
            _server = server
        host, port = _server.get_host_and_port()
    return f"http://{host}:{port}"


def aws_env(tmp_path: Path, endpoint_url: str | None = None, **extra: str | None) -> dict[str, str | None]:
    """The variables a user would set for an S3-compatible server, isolated from ~/.aws."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url or endpoint(),
        "AWS_ENDPOINT_URL_S3": None,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": None,
        "AWS_PROFILE": None,
        "AWS_REGION": None,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config-absent"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials-absent"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": None,
        "AWS_RETRY_MODE": None,
        **extra,
    }


def client(endpoint_url: str | None = None):
    """A plain boto3 client on the moto server, to arrange and inspect state around the code under test."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url or endpoint(), region_name=REGION,
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)


def new_bucket() -> str:
    name = f"soopervisor-{uuid.uuid4().hex[:12]}"
    client().create_bucket(Bucket=name)
    return name


@contextmanager
def storage(tmp_path: Path, prefix: str = "some/prefix") -> Iterator[Storage]:
    """A fresh, empty S3 storage: a new bucket on the session's moto server."""
    bucket = new_bucket()
    with env(**aws_env(tmp_path)):
        yield open_storage(f"s3://{bucket}/{prefix}")
