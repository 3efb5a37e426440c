"""What only the S3 backend does: URLs and AWS settings, multipart, its errors, its retries.

Everything runs against a real S3 API (moto server on loopback) through the real
s3fs/botocore stack; throttling and dropped connections come from a small HTTP
proxy in front of it. The contract every backend meets is in test_storage_contract.py.
"""
from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from botocore.exceptions import ClientError

from soopervisor.artifacts import download_set, list_sets, write_manifest
from soopervisor.credentials import CredentialsError
from soopervisor.errors import ArtifactsNotFound, StorageUnavailable, UnsafePath, UsageError
from soopervisor.redact import CREDENTIALS
from soopervisor.storage import open_storage, s3
from soopervisor.storage.remote import RemoteStorage
from tests.backends import s3 as backend

COMMIT = "c" * 40
MiB = 1024 * 1024


def make_set(root: Path, files: dict[str, bytes], commit: str = COMMIT, run_id: str = "r1") -> Path:
    """A run's set folder: the products under files/, then the manifest."""
    folder = root / f"set-{len(list(root.glob('set-*')))}"
    (folder / "files").mkdir(parents=True)
    for name, data in files.items():
        (folder / "files" / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / "files" / name).write_bytes(data)
    write_manifest(folder, project="proj", commit=commit, run_id=run_id, dirty=False, mode="sample",
                   status="succeeded", exit_code=0, started_at="2026-11-28T10:00:00Z",
                   finished_at="2026-11-28T10:01:00Z")
    return folder


@pytest.fixture
def aws(tmp_path) -> Iterator[dict[str, str | None]]:
    """The AWS variables pointing at the session's moto server, isolated from the user's ~/.aws."""
    values = backend.aws_env(tmp_path)
    with backend.env(**values):
        yield values


@pytest.fixture
def bucket(aws) -> str:
    return backend.new_bucket()


# -- URLs and settings -------------------------------------------------------------------------
def test_url_names_bucket_prefix_and_options(aws):
    st = open_storage("s3://my-bucket/team/artifacts/?region=eu-west-3&endpoint_url=http://127.0.0.1:9000")
    assert isinstance(st, RemoteStorage)
    store = st.store
    assert (store.bucket, store.prefix) == ("my-bucket", "team/artifacts")
    assert store.endpoint_url == "http://127.0.0.1:9000" and store.region == "eu-west-3"
    # the URL reopens the same storage
    assert st.url == "s3://my-bucket/team/artifacts?endpoint_url=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-3"
    assert open_storage(st.url).store.endpoint_url == "http://127.0.0.1:9000"
    top = open_storage("s3://my-bucket").store
    assert top.prefix == "" and top.url == "s3://my-bucket"
    assert top._object_key("proj/c/manifest.json") == "proj/c/manifest.json"


@pytest.mark.parametrize("url, what", [
    ("s3://", "names no bucket"),
    ("s3:///x", "names no bucket"),
    ("s3://bucket/a/../b", "'..'"),
    ("s3://bucket/x?endpoint=http://h", "unknown option 'endpoint'"),
    ("s3://bucket/x?region=", "is empty"),
    ("s3://bucket?addressing_style=sideways", "addressing_style"),
    ("s3://bucket:9000/x", "not a bucket name"),
    ("s3://AKIAKEY:secret@bucket/x", "carries credentials"),
])
def test_bad_urls_are_usage_errors_with_a_hint(aws, url, what):
    with pytest.raises(UsageError, match=what) as e:
        open_storage(url)
    assert "s3://BUCKET" in e.value.hint
    assert "secret" not in str(e.value) and "AKIAKEY" not in str(e.value)


def test_endpoint_and_region_from_the_aws_variables(tmp_path):
    with backend.env(**backend.aws_env(tmp_path, endpoint_url="http://general:9000",
                                       AWS_ENDPOINT_URL_S3="http://s3-only:9000", AWS_REGION="ap-south-1")):
        store = open_storage("s3://b/p").store
        assert store.endpoint_url == "http://s3-only:9000"  # the service-specific variable wins
        assert store.region == "ap-south-1"  # AWS_REGION over AWS_DEFAULT_REGION
        assert open_storage("s3://b/p?endpoint_url=http://url:1").store.endpoint_url == "http://url:1"
    with backend.env(**backend.aws_env(tmp_path)):
        assert open_storage("s3://b").store.region == backend.REGION


def test_a_profile_from_the_aws_files_works(tmp_path, bucket):
    creds = tmp_path / "credentials"
    creds.write_text(f"[minio]\naws_access_key_id = {backend.ACCESS_KEY}\naws_secret_access_key = other-secret-in-profile\n")
    with backend.env(AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None, AWS_SHARED_CREDENTIALS_FILE=str(creds)):
        st = open_storage(f"s3://{bucket}/p?profile=minio")
        st.check_writable()
        assert CREDENTIALS.redact("key: other-secret-in-profile") == "key: ***"
        with backend.env(AWS_PROFILE="minio"):
            open_storage(f"s3://{bucket}/p").check_writable()
        with pytest.raises(CredentialsError, match="profile 'nope' is not configured"):
            open_storage(f"s3://{bucket}/p?profile=nope")


def test_no_credentials_at_all_says_which_variables_to_set(aws, bucket):
    with backend.env(AWS_ACCESS_KEY_ID=None, AWS_SECRET_ACCESS_KEY=None), \
            pytest.raises(CredentialsError, match="no AWS credentials") as e:
        open_storage(f"s3://{bucket}/p")
    assert "AWS_ACCESS_KEY_ID" in e.value.hint and "AWS_PROFILE" in e.value.hint


def test_credential_values_are_registered_with_the_redactor(aws, bucket):
    open_storage(f"s3://{bucket}/p")
    assert CREDENTIALS.redact(f"id={backend.ACCESS_KEY} secret={backend.SECRET_KEY}") == "id=*** secret=***"


# -- transfers -----------------------------------------------------------------------------------
def test_a_large_file_goes_up_in_parts_and_comes_back_whole(aws, bucket, tmp_path):
    big = bytes(range(256)) * (17 * MiB // 256) + b"tail"  # above twice the 8 MiB block
    st = open_storage(f"s3://{bucket}/pre")
    st.put_set("proj", COMMIT, "r1", make_set(tmp_path, {"output/big.bin": big, "small.txt": b"s"}))
    c = backend.client()
    etag = c.head_object(Bucket=bucket, Key=f"pre/proj/{COMMIT}/r1/files/output/big.bin")["ETag"]
    assert etag.strip('"').endswith("-3")  # S3's multipart ETag: md5-of-parts "-" part count
    assert "-" not in c.head_object(Bucket=bucket, Key=f"pre/proj/{COMMIT}/r1/files/small.txt")["ETag"]
    assert c.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    out = tmp_path / "out"
    download_set(st, "proj", COMMIT, out)  # sha256-verified
    assert (out / "output/big.bin").read_bytes() == big


def test_the_block_size_is_configurable(aws, bucket, tmp_path):
    st = s3.open_url(f"s3://{bucket}", block_size=5 * MiB)  # S3's smallest part
    st.put_set("proj", COMMIT, "r1", make_set(tmp_path, {"f.bin": b"x" * (11 * MiB)}))
    etag = backend.client().head_object(Bucket=bucket, Key=f"proj/{COMMIT}/r1/files/f.bin")["ETag"]
    assert etag.strip('"').endswith("-3")


def test_objects_stay_under_the_prefix_and_outside_keys_are_invisible(aws, bucket, tmp_path):
    c = backend.client()
    c.put_object(Bucket=bucket, Key=f"elsewhere/proj/{COMMIT}/manifest.json", Body=b"{}")
    c.put_object(Bucket=bucket, Key="pre/folder-marker/", Body=b"")
    st = open_storage(f"s3://{bucket}/pre")
    assert st.list_projects() == []
    st.put_set("proj", COMMIT, "r1", make_set(tmp_path, {"a.txt": b"a"}))
    keys = sorted(o["Key"] for o in c.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["elsewhere/proj/" + COMMIT + "/manifest.json", "pre/folder-marker/",
                    f"pre/proj/{COMMIT}/r1/files/a.txt", f"pre/proj/{COMMIT}/r1/manifest.json"]
    assert [m.commit for m in list_sets("proj", st)] == [COMMIT]
    for key in ("../x", "a/../../b", "/abs", "a//b", "a\\b", ""):
        with pytest.raises(UnsafePath):
            st.store.read(key)


def test_check_writable_leaves_no_probe_behind(aws, bucket):
    st = open_storage(f"s3://{bucket}/pre")
    st.check_writable()
    assert backend.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_deletes_are_batched(aws, bucket, tmp_path, monkeypatch):
    monkeypatch.setattr(s3, "DELETE_BATCH", 2)
    st = open_storage(f"s3://{bucket}")
    for i in range(5):
        st.store.write(f"proj/{COMMIT}/f{i}", b"x")
    with counting_proxy(backend.endpoint()) as proxy, backend.env(AWS_ENDPOINT_URL=proxy.url):
        open_storage(f"s3://{bucket}").store.delete([f"proj/{COMMIT}/f{i}" for i in range(5)] + ["proj/gone"])
    assert [r for r in proxy.requests if r.startswith("POST")] == [f"POST /{bucket}?delete"] * 3
    assert backend.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0


# -- errors ----------------------------------------------------------------------------------------
def test_a_missing_bucket_is_storage_unavailable_naming_it(aws):
    st = open_storage("s3://no-such-bucket-here/pre")
    for action in (st.check_writable, st.list_projects, lambda: st.read_manifest("proj", COMMIT)):
        with pytest.raises(StorageUnavailable, match="bucket 'no-such-bucket-here' does not exist") as e:
            action()
        assert "aws s3 mb s3://no-such-bucket-here" in e.value.hint


def test_a_missing_object_is_artifacts_not_found(aws, bucket, tmp_path):
    st = open_storage(f"s3://{bucket}")
    with pytest.raises(ArtifactsNotFound):
        st.store.read("proj/x/manifest.json")
    with pytest.raises(ArtifactsNotFound):
        st.store.download("proj/x/a.txt", tmp_path / "a.txt", lambda n: None)


def test_an_unreachable_endpoint_is_storage_unavailable(tmp_path):
    with backend.env(**backend.aws_env(tmp_path, endpoint_url=f"http://127.0.0.1:{_closed_port()}",
                                       AWS_MAX_ATTEMPTS="2")):
        st = open_storage("s3://bucket/pre")
        with pytest.raises(StorageUnavailable, match="cannot reach the S3 endpoint http://127.0.0.1") as e:
            st.check_writable()
    assert "AWS_ENDPOINT_URL" in e.value.hint


@contextmanager
def iam_enforced() -> Iterator[None]:
    """moto checks signatures and IAM policies (through its documented /moto-api/reset-auth)."""
    url = backend.endpoint() + "/moto-api/reset-auth"
    requests.post(url, data=b"0", timeout=10).raise_for_status()
    try:
        yield
    finally:
        requests.post(url, data=b"inf", timeout=10).raise_for_status()


def test_wrong_keys_are_a_credentials_error_without_the_secret(aws, bucket):
    wrong_secret = "wrong/secret+value-soopervisor-987654"
    with backend.env(AWS_ACCESS_KEY_ID="AKIAWRONGKEYSOOPERV1", AWS_SECRET_ACCESS_KEY=wrong_secret):
        st = open_storage(f"s3://{bucket}/pre")
        with iam_enforced(), pytest.raises(CredentialsError, match="InvalidAccessKeyId") as e:
            st.check_writable()
    text = str(e.value) + repr(e.value)
    assert wrong_secret not in text and "AKIAWRONGKEYSOOPERV1" not in text
    assert e.value.__cause__ is None  # botocore's exception (request headers) is not chained
    assert "AWS_ACCESS_KEY_ID" in e.value.hint


def test_a_key_without_permission_is_a_credentials_error(aws, bucket):
    import boto3

    iam = boto3.client("iam", endpoint_url=backend.endpoint(), region_name=backend.REGION,
                       aws_access_key_id=backend.ACCESS_KEY, aws_secret_access_key=backend.SECRET_KEY)
    iam.create_user(UserName=f"reader-{bucket}")
    key = iam.create_access_key(UserName=f"reader-{bucket}")["AccessKey"]
    with backend.env(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"]):
        st = open_storage(f"s3://{bucket}/pre")
        # (a write: moto's signature check mishandles a "/" in a listing's query string)
        with iam_enforced(), pytest.raises(CredentialsError, match="denied access.*AccessDenied") as e:
            st.check_writable()
    assert key["SecretAccessKey"] not in str(e.value)


@pytest.mark.parametrize("code, status, error, match", [
    ("ExpiredToken", 400, CredentialsError, "ExpiredToken"),
    ("SignatureDoesNotMatch", 403, CredentialsError, "SignatureDoesNotMatch"),
    ("PermanentRedirect", 301, StorageUnavailable, "another region"),
    ("SlowDown", 503, StorageUnavailable, "throttling"),
    ("QuotaExceeded", 400, StorageUnavailable, "QuotaExceeded"),
])
def test_other_s3_errors_map_to_soopervisor_errors(code, status, error, match):
    e = ClientError({"Error": {"Code": code, "Message": "details"},
                     "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")
    mapped = s3.translate_error(OSError("wrapped"), bucket="b", where="s3://b", endpoint=None, profile=None)
    assert isinstance(mapped, OSError)  # not an S3 error: left alone
    wrapped = OSError("translated by s3fs")
    wrapped.__cause__ = e
    mapped = s3.translate_error(wrapped, bucket="b", where="s3://b", endpoint=None, profile="work")
    assert isinstance(mapped, error) and mapped.hint
    assert match in mapped.message
    if error is CredentialsError:
        assert "profile 'work'" in mapped.hint


# -- retries ---------------------------------------------------------------------------------------
class _Proxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.requests: list[str] = []
        self.fail_next: list[str] = []  # "503" or "drop", consumed one per request
        self.url = ""


@contextmanager
def counting_proxy(upstream: str) -> Iterator[_Proxy]:
    """An HTTP proxy on loopback in front of moto: records requests; can answer 503 SlowDown or drop the connection."""
    proxy = _Proxy(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            proxy.requests.append(f"{self.command} {self.path}")
            fault = proxy.fail_next.pop(0) if proxy.fail_next else None
            if fault == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault == "503":
                data = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                        b"<Message>Please reduce your request rate.</Message><RequestId>1</RequestId></Error>")
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("expect", "connection")}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()


def test_throttling_and_dropped_connections_are_retried(aws, bucket, tmp_path):
    with counting_proxy(backend.endpoint()) as proxy, backend.env(AWS_ENDPOINT_URL=proxy.url):
        st = open_storage(f"s3://{bucket}/pre")
        proxy.fail_next = ["503", "drop", "503"]
        st.put_set("proj", COMMIT, "r1", make_set(tmp_path, {"a.txt": b"a", "b.txt": b"b"}))
        assert proxy.fail_next == []
        out = tmp_path / "out"
        proxy.fail_next = ["503"]
        download_set(st, "proj", COMMIT, out)
    assert (out / "a.txt").read_bytes() == b"a"
    assert [m.commit for m in list_sets("proj", open_storage(f"s3://{bucket}/pre"))] == [COMMIT]


def test_throttling_that_does_not_stop_is_storage_unavailable(aws, bucket):
    with counting_proxy(backend.endpoint()) as proxy, backend.env(AWS_ENDPOINT_URL=proxy.url, AWS_MAX_ATTEMPTS="2"):
        st = open_storage(f"s3://{bucket}/pre")
        proxy.fail_next = ["503"] * 100
        with pytest.raises(StorageUnavailable, match="throttling") as e:
            st.check_writable()
    assert "try again later" in e.value.hint
    assert 2 <= len(proxy.requests) <= 4  # AWS_MAX_ATTEMPTS per call, one more round from s3fs at most


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_manifest_is_the_last_object_written(aws, bucket, tmp_path):
    with counting_proxy(backend.endpoint()) as proxy, backend.env(AWS_ENDPOINT_URL=proxy.url):
        open_storage(f"s3://{bucket}/pre").put_set("proj", COMMIT, "r1", make_set(tmp_path, {"a": b"1", "b/c": b"2"}))
    puts = [r for r in proxy.requests if r.startswith("PUT")]
    assert puts[-1].split("?")[0] == f"PUT /{bucket}/pre/proj/{COMMIT}/r1/manifest.json"
    key = f"pre/proj/{COMMIT}/r1/manifest.json"
    assert json.loads(backend.client().get_object(Bucket=bucket, Key=key)["Body"].read())["commit"] == COMMIT
