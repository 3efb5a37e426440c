"""S3-compatible storage: ``s3://bucket/prefix``, through s3fs (fsspec on aiobotocore).

Sets live under ``s3://bucket/prefix/<project>/<commit>/<name>``; the set logic
(manifest last, incremental copies, parallel transfers, progress) is
:class:`~soopervisor.storage.remote.RemoteStorage`'s. This module only moves
objects, and turns S3's errors into soopervisor errors with a hint.

Where to connect and as whom come from the usual AWS settings, so AWS, MinIO,
Cloudflare R2, Backblaze B2 and Ceph all work:

* endpoint: ``?endpoint_url=`` in the URL, else ``AWS_ENDPOINT_URL_S3``, else
  ``AWS_ENDPOINT_URL``, else the profile's ``endpoint_url``, else AWS;
* region: ``?region=``, else ``AWS_REGION``, else ``AWS_DEFAULT_REGION``, else
  the profile's ``region``;
* credentials: ``?profile=`` or ``AWS_PROFILE`` (a profile in ``~/.aws``), else
  botocore's usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
  ``AWS_SESSION_TOKEN``, the default profile, SSO, instance roles...);
* ``?addressing_style=path|virtual``: path-style is the default with a custom
  endpoint (MinIO and Ceph need it; R2 and B2 accept it);
* retries: ``AWS_MAX_ATTEMPTS`` (default 5) and ``AWS_RETRY_MODE`` (default
  ``adaptive``: backoff on SlowDown/503/throttling and dropped connections,
  with client-side rate limiting).

Files above twice :data:`BLOCK_SIZE` go up as multipart uploads; copies are
server-side; deletes are batched (1,000 keys a request).
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import s3fs
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from fsspec.asyn import sync
from fsspec.callbacks import Callback

from soopervisor import credentials
from soopervisor.credentials import CredentialsError
from soopervisor.errors import ArtifactsNotFound, SoopervisorError, StorageUnavailable, UnsafePath, UsageError
from soopervisor.redact import CREDENTIALS
from soopervisor.storage.remote import ObjectInfo, Progress, RemoteStorage

MiB = 1024 * 1024
#: multipart part size; s3fs sends a file of at least twice this as a multipart upload.
#: 8 MiB is what the AWS CLI uses: few requests, little memory (parts x workers in flight)
BLOCK_SIZE = 8 * MiB
#: parts of one file in flight at once (RemoteStorage already moves several files at once)
PART_CONCURRENCY = 4
#: keys per DeleteObjects request (the S3 maximum)
DELETE_BATCH = 1000
#: attempts per request, and botocore's retry mode, unless AWS_MAX_ATTEMPTS/AWS_RETRY_MODE say otherwise
MAX_ATTEMPTS = 5
RETRY_MODE = "adaptive"

#: query parameters an s3:// URL may carry
OPTIONS = ("endpoint_url", "region", "profile", "addressing_style")

_CREDENTIAL_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AccountProblem", "AllAccessDisabled", "InvalidClientTokenId",
    "UnrecognizedClientException", "RequestTimeTooSkewed", "Unauthorized", "Forbidden",
}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException",
                 "301", "InvalidRegion"}


# -- the URL ---------------------------------------------------------------------------
def parse_url(url: str) -> tuple[str, str, dict[str, str]]:
    """``(bucket, prefix, options)`` of ``s3://bucket/prefix?option=value``; UsageError when malformed.

    The prefix has no leading or trailing "/" ("" for the bucket's top).
    """
    hint = "use s3://BUCKET or s3://BUCKET/some/prefix (options: " + ", ".join(f"?{o}=" for o in OPTIONS) + ")"
    parts = urlsplit(url)
    if parts.scheme.lower() != "s3":
        raise UsageError(f"{url!r} is not an s3:// URL", hint=hint)
    bucket = parts.netloc
    if not bucket:
        raise UsageError(f"the S3 URL {url!r} names no bucket", hint=hint)
    if "@" in bucket:  # never echo it: what comes before "@" would be a key and a secret
        raise UsageError(
            "the S3 URL carries credentials (user:password@bucket); they never go in the URL",
            hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, and use s3://BUCKET/prefix",
        )
    # S3's own rules are stricter (3-63 lowercase characters); S3-compatible stores differ, so
    # only refuse what cannot be a bucket name anywhere
    if not all(c.isalnum() or c in "._-" for c in bucket):
        raise UsageError(f"{bucket!r} is not a bucket name",
                         hint="a bucket name has letters, digits, '.', '-' and '_' only; " + hint)
    segments = [s for s in parts.path.split("/") if s]
    if any(s in (".", "..") or "\\" in s or "\0" in s for s in segments):
        raise UsageError(f"the S3 prefix in {url!r} has '.' or '..' segments or backslashes", hint=hint)
    if parts.fragment:
        raise UsageError(f"the S3 URL {url!r} has a '#' fragment", hint=hint)
    options: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in OPTIONS:
            raise UsageError(f"unknown option {name!r} in the S3 URL", hint=hint)
        if not value:
            raise UsageError(f"the option {name!r} in the S3 URL is empty", hint=hint)
        options[name] = value
    style = options.get("addressing_style")
    if style is not None and style not in ("path", "virtual", "auto"):
        raise UsageError(f"addressing_style must be path, virtual or auto, not {style!r}", hint=hint)
    return bucket, "/".join(segments), options


def canonical_url(bucket: str, prefix: str, options: dict[str, str]) -> str:
    """The URL that reopens this storage (no credentials ever appear in it)."""
    url = f"s3://{bucket}/{quote(prefix)}" if prefix else f"s3://{bucket}"
    return url + (f"?{urlencode(sorted(options.items()))}" if options else "")


# -- settings and credentials --------------------------------------------------------------
def _credentials_hint(profile: str | None) -> str:
    if profile:
        return (f"check the keys of the AWS profile '{profile}' (~/.aws/credentials or ~/.aws/config; "
                f"for SSO run `aws sso login --profile {profile}`), or unset AWS_PROFILE and set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    return ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), "
            "or AWS_PROFILE (or ?profile= in the URL) naming a profile in ~/.aws/credentials")


def _settings(options: dict[str, str]) -> dict[str, Any]:
    """Endpoint, region, profile and addressing style: the URL's options first, then the AWS variables."""
    endpoint = options.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = options.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    profile = options.get("profile") or os.environ.get("AWS_PROFILE") or None
    style = options.get("addressing_style") or ("path" if endpoint else None)
    if endpoint and not urlsplit(endpoint).scheme.startswith("http"):
        raise UsageError(f"the S3 endpoint {endpoint!r} is not an http(s) URL",
                         hint="e.g. AWS_ENDPOINT_URL=https://minio.example.com:9000")
    return {"endpoint_url": endpoint, "region": region, "profile": profile, "addressing_style": style}


def load_credentials(profile: str | None, where: str) -> None:
    """Check that botocore finds credentials, and register them with the redactor.

    s3fs resolves them again itself (so refreshable credentials, e.g. SSO or an
    assumed role, keep refreshing); this is for a clear error now, before any
    transfer, and so that no key can reach a log.
    """
    import botocore.session

    try:
        found = botocore.session.Session(profile=profile).get_credentials()
    except ProfileNotFound:
        raise CredentialsError(f"the AWS profile '{profile}' is not configured", hint=_credentials_hint(None)) from None
    except (PartialCredentialsError, BotoCoreError) as e:
        raise CredentialsError(f"cannot load AWS credentials for {where}: {type(e).__name__}",
                               hint=_credentials_hint(profile)) from None
    if found is None:
        raise CredentialsError(f"no AWS credentials found for {where}", hint=_credentials_hint(profile))
    frozen = found.get_frozen_credentials()
    credentials.register([frozen.access_key, frozen.secret_key, frozen.token or ""])


# -- errors ---------------------------------------------------------------------------------
def _in_chain(e: BaseException, kind: type) -> Any:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, kind):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def translate_error(e: BaseException, *, bucket: str, where: str, endpoint: str | None,
                    profile: str | None, key: str | None = None) -> BaseException:
    """The soopervisor error for an S3 failure (``e`` itself when it is not one: a local file error).

    ``where`` names the storage (its URL), ``key`` the object when there is one.
    Messages carry the S3 error code, never a credential.
    """
    at = f" at {endpoint}" if endpoint else ""
    if isinstance(e, SoopervisorError):
        return e
    client = _in_chain(e, ClientError)
    if client is not None:
        error = client.response.get("Error", {}) or {}
        code = str(error.get("Code") or client.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        status = client.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return StorageUnavailable(
                f"the S3 bucket '{bucket}' does not exist{at}",
                hint=f"create it (aws s3 mb s3://{bucket}), or check the bucket name and the endpoint "
                     "(AWS_ENDPOINT_URL) and region (AWS_REGION)",
            )
        if code in _CREDENTIAL_CODES or status in (401, 403):
            what = "refused the credentials" if code != "AccessDenied" else "denied access"
            return CredentialsError(f"S3{at} {what} for {where} ({code})", hint=_credentials_hint(profile))
        if code in _MISSING_CODES or status == 404:
            return ArtifactsNotFound(f"{key or 'the object'} is not in {where}",
                                     hint="soopervisor artifacts list shows the stored commits")
        if code in _REGION_CODES:
            return StorageUnavailable(f"the S3 bucket '{bucket}' is in another region ({code})",
                                      hint="set AWS_REGION (or ?region= in the URL) to the bucket's region")
        message = CREDENTIALS.redact(str(error.get("Message") or ""))[:300]
        if code in ("SlowDown", "ServiceUnavailable", "503", "Throttling", "RequestLimitExceeded") or status in (429, 503):
            return StorageUnavailable(
                f"S3{at} kept throttling requests ({code}) after retries with backoff",
                hint="try again later, or raise AWS_MAX_ATTEMPTS",
            )
        return StorageUnavailable(f"S3{at} failed on {key or where}: {code} {message}".rstrip(),
                                  hint="check the bucket's permissions and quota, then try again")
    if _in_chain(e, (NoCredentialsError, PartialCredentialsError, ProfileNotFound)) is not None:
        return CredentialsError(f"no usable AWS credentials for {where}", hint=_credentials_hint(profile))
    if _in_chain(e, NoRegionError) is not None:
        return StorageUnavailable(f"no AWS region set for {where}", hint="set AWS_REGION or ?region= in the URL")
    network = _in_chain(e, (BotoConnectionError, HTTPClientError))
    if network is not None or _in_chain(e, TimeoutError) is not None:
        name = type(network or e).__name__
        return StorageUnavailable(
            f"cannot reach the S3 endpoint {endpoint or 'of AWS'} for {where} ({name})",
            hint="check the network and AWS_ENDPOINT_URL (or ?endpoint_url= in the URL); "
                 "retries with backoff were made (AWS_MAX_ATTEMPTS)",
        )
    if isinstance(e, FileNotFoundError) and e.filename is None:  # s3fs's own "not found"
        return ArtifactsNotFound(f"{key or 'the object'} is not in {where}",
                                 hint="soopervisor artifacts list shows the stored commits")
    if isinstance(e, BotoCoreError):
        return StorageUnavailable(f"S3 failed for {where}: {type(e).__name__}", hint="try again")
    return e


class _ProgressCallback(Callback):
    """fsspec's progress callback, forwarding each increment to RemoteStorage's meter."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self._progress = progress

    def relative_update(self, inc: int = 1) -> None:
        self._progress(inc)


# -- the object store ----------------------------------------------------------------------------
class S3ObjectStore:
    """:class:`~soopervisor.storage.remote.ObjectStore` on one bucket and prefix, through s3fs."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 region: str | None = None, profile: str | None = None,
                 addressing_style: str | None = None, block_size: int = BLOCK_SIZE,
                 url: str | None = None) -> None:
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint_url, self.region, self.profile = endpoint_url, region, profile
        self.block_size = block_size
        self.url = url or canonical_url(bucket, self.prefix, {})
        attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or MAX_ATTEMPTS)
        config: dict[str, Any] = {
            # total_max_attempts counts the first request, as AWS_MAX_ATTEMPTS does ("max_attempts" would not)
            "retries": {"total_max_attempts": attempts, "mode": os.environ.get("AWS_RETRY_MODE") or RETRY_MODE},
            "connect_timeout": 10,
            "read_timeout": 60,
            # parallel files x parts in flight, plus listings
            "max_pool_connections": 32,
            # no CRC32 of every downloaded body: download_set checks each file's sha256 against the
            # manifest (the stronger, end-to-end check), and the CRC costs about as much CPU again
            # on the event loop that serves every transfer. Uploads keep their checksums
            "response_checksum_validation": "when_required",
        }
        if addressing_style:
            config["s3"] = {"addressing_style": addressing_style}
        self.fs = s3fs.S3FileSystem(
            profile=profile,
            endpoint_url=endpoint_url,
            client_kwargs={"region_name": region} if region else {},
            config_kwargs=config,
            default_block_size=block_size,
            max_concurrency=PART_CONCURRENCY,
            skip_instance_cache=True,  # each store has its own settings; never share a client
            use_listings_cache=False,  # other machines write the same bucket
        )
        # botocore retries each request with backoff; s3fs's own loop (5 rounds by default, on top)
        # would multiply the waits: keep one more round for what botocore cannot retry (a body cut
        # off mid-read)
        self.fs.retries = 2

    # -- keys ------------------------------------------------------------------------------------
    def _object_key(self, key: str, folder: bool = False) -> str:
        """The S3 key of ``key`` under the prefix; UnsafePath for a key that could leave the prefix.

        Keys come from RemoteStorage, which checks names already; this is the last line anyway.
        ``folder`` allows "" and a trailing "/" (listing prefixes); the result then ends in "/"
        unless it is the bucket's top.
        """
        body = key[:-1] if folder and key.endswith("/") else key
        parts = body.split("/") if body else []
        if (not parts and not folder) or key.startswith("/") or "\\" in key or "\0" in key \
                or any(p in ("", ".", "..") for p in parts):
            raise UnsafePath(f"unsafe S3 key {key!r}", hint="keys are relative paths without '..' or empty segments")
        joined = "/".join(p for p in (self.prefix, body) if p)
        return joined + "/" if folder and joined else joined

    def _path(self, key: str) -> str:
        """``bucket/prefix/key``, the form s3fs takes."""
        return f"{self.bucket}/{self._object_key(key)}"

    def _key(self, path: str) -> str:
        """The key relative to the prefix of an S3 key (without the bucket)."""
        return path[len(self.prefix) + 1:] if self.prefix else path

    def _fail(self, e: BaseException, key: str | None = None) -> NoReturn:
        mapped = translate_error(e, bucket=self.bucket, where=self.url, endpoint=self.endpoint_url,
                                 profile=self.profile, key=key)
        if mapped is e:
            raise e
        # a credentials error drops the chain: botocore's exception carries the request's headers
        raise mapped from (None if isinstance(mapped, CredentialsError) else e)

    def _call(self, method: str, **kwargs: Any) -> Any:
        """One S3 API call through s3fs's client (its retries and session)."""
        return sync(self.fs.loop, self.fs._call_s3, method, **kwargs)

    # -- ObjectStore -------------------------------------------------------------------------------
    def check_writable(self) -> None:
        """Write and delete a tiny probe object at the prefix (a hidden name, never listed as a project)."""
        key = f".soopervisor-probe-{secrets.token_hex(8)}"
        try:
            self.fs.pipe_file(self._path(key), b"probe")
            self._call("delete_object", Bucket=self.bucket, Key=self._object_key(key))
        except Exception as e:  # noqa: BLE001 - mapped to a soopervisor error
            self._fail(e)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, recursively (ListObjectsV2 without a delimiter, page by page)."""
        s3_prefix = self._object_key(prefix, folder=True)
        found: list[ObjectInfo] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": s3_prefix}
        try:
            while True:
                page = self._call("list_objects_v2", **kwargs)
                for obj in page.get("Contents", []):
                    if not obj["Key"].endswith("/"):  # "folder" markers some tools create
                        found.append(ObjectInfo(self._key(obj["Key"]), int(obj.get("Size", 0))))
                if not page.get("IsTruncated"):
                    break
                kwargs["ContinuationToken"] = page["NextContinuationToken"]
        except Exception as e:  # noqa: BLE001
            self._fail(e, prefix or None)
        return iter(found)

    def read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return self.fs.cat_file(path)
        except Exception as e:  # noqa: BLE001
            self._fail(e, key)

    def write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            self.fs.pipe_file(path, data)
        except Exception as e:  # noqa: BLE001
            self._fail(e, key)

    def upload(self, key: str, src: Path, progress: Progress) -> None:
        """One file; multipart (in BLOCK_SIZE parts) from twice BLOCK_SIZE. A failed multipart upload is aborted."""
        path = self._path(key)
        try:
            self.fs.put_file(str(src), path, callback=_ProgressCallback(progress), chunksize=self.block_size,
                             max_concurrency=PART_CONCURRENCY)
        except Exception as e:  # noqa: BLE001
            self._fail(e, key)

    def download(self, key: str, dest: Path, progress: Progress) -> None:
        path = self._path(key)
        try:
            self.fs.get_file(path, str(dest), callback=_ProgressCallback(progress), chunksize=self.block_size,
                             max_concurrency=PART_CONCURRENCY)
        except Exception as e:  # noqa: BLE001
            self._fail(e, key)

    def copy(self, src_key: str, dst_key: str) -> None:
        """Server-side (CopyObject; multipart copy above 5 GiB): no byte goes through this machine."""
        src, dst = self._path(src_key), self._path(dst_key)
        try:
            self.fs.cp_file(src, dst)
        except Exception as e:  # noqa: BLE001
            self._fail(e, src_key)

    def delete(self, keys: list[str]) -> None:
        """DeleteObjects, 1,000 keys a request; keys already gone are fine (S3 reports them deleted)."""
        objects = [{"Key": self._object_key(k)} for k in keys]
        try:
            for i in range(0, len(objects), DELETE_BATCH):
                out = self._call("delete_objects", Bucket=self.bucket,
                                 Delete={"Objects": objects[i:i + DELETE_BATCH], "Quiet": True})
                errors = [err for err in out.get("Errors", []) if err.get("Code") != "NoSuchKey"]
                if errors:
                    first = errors[0]
                    raise ClientError({"Error": {"Code": first.get("Code"), "Message": first.get("Message")}},
                                      "DeleteObjects")
        except Exception as e:  # noqa: BLE001
            self._fail(e, keys[0] if len(keys) == 1 else None)

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.url!r})"


def open_url(url: str, *, progress: Callable[[str], None] | None = None, block_size: int = BLOCK_SIZE) -> RemoteStorage:
    """The storage at ``s3://bucket/prefix[?endpoint_url=...&region=...&profile=...]``.

    UsageError for a malformed URL; CredentialsError when no AWS credentials are
    found. Nothing is sent to S3 yet (``check_writable`` does, before a run).
    """
    bucket, prefix, options = parse_url(url)
    settings = _settings(options)
    canonical = canonical_url(bucket, prefix, options)
    load_credentials(settings["profile"], canonical)
    store = S3ObjectStore(bucket, prefix, block_size=block_size, url=canonical, **settings)
    return RemoteStorage(store, progress=progress)
