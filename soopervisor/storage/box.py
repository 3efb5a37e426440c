"""Box storage: ``box://FOLDER``, through Box's official SDK (boxsdk >= 10, module ``box_sdk_gen``).

URL forms:

* ``box://0`` or ``box://`` — the root of "All Files";
* ``box://123456789`` — the folder with that id (the number at the end of the
  folder's address in the Box web app, ``https://app.box.com/folder/123456789``);
* ``box://123456789/runs/ml`` — folders ``runs/ml`` under that folder;
* ``box://artifacts/ml`` — folders by name from the root (a first segment that
  is all digits is read as an id, so write ``box://0/2024`` for a folder named 2024).

Missing folders are created.

Sign-in (``soopervisor login box``): create a *Custom App* with *User
Authentication (OAuth 2.0)* at https://app.box.com/developers/console, add the
redirect URI ``http://localhost:8765/callback`` (nothing needs to listen there;
you paste the address the browser ends on), tick *Read and write all files and
folders*, and copy its client id and secret. The command prints a link; after
you allow the app, paste the code or the whole redirect address (within 30
seconds: Box codes are short-lived). Box refresh tokens are single-use: every
refresh returns a new one, which is saved at once (keyring or 0600 file). The
processes of one machine refresh under :func:`soopervisor.credentials.refresh_lock`:
one that waited takes the token the other saved instead of spending the old one.

CI, in order of preference:

* Box's client-credentials grant (a *Server Authentication* app):
  ``SOOPERVISOR_BOX_CLIENT_ID``, ``SOOPERVISOR_BOX_CLIENT_SECRET``,
  ``SOOPERVISOR_BOX_SUBJECT_TYPE`` (``enterprise`` or ``user``) and
  ``SOOPERVISOR_BOX_SUBJECT_ID``: every run gets a 60-minute token, no refresh
  token exists to be spent;
* a sign-in of CI's own (``soopervisor login box --ci``, :func:`login_for_ci`):
  ``SOOPERVISOR_BOX_CLIENT_ID``, ``_CLIENT_SECRET`` and ``_REFRESH_TOKEN``; its
  successor is saved on the machine and used by later runs there (a runner that
  starts clean spends the secret in its first run);
* for a one-off job, ``SOOPERVISOR_BOX_DEVELOPER_TOKEN`` (60 minutes).

Files from :data:`CHUNKED_FROM` (50 MB: Box's direct upload takes files up to
50 MB and Box recommends chunked uploads above; sessions accept files from
20 MB) go through an upload session in the part size Box chooses; smaller ones
in one request. A file larger than the
account's upload limit (250 MB on free accounts) is refused before anything is
sent. A download whose stream breaks off resumes from the byte it reached
(HTTP Range). Names Box refuses (:func:`name_problem`) are reported for the
whole set before anything is sent.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import requests
import urllib3
from box_sdk_gen import (
    AccessToken,
    BaseUrls,
    BoxAPIError,
    BoxCCGAuth,
    BoxClient,
    BoxDeveloperTokenAuth,
    BoxNetworkClient,
    BoxOAuth,
    BoxRetryStrategy,
    BoxSDKError,
    CCGConfig,
    CopyFileParent,
    CreateFolderParent,
    GetAuthorizeUrlOptions,
    NetworkSession,
    OAuthConfig,
    TokenStorage,
    UploadFileAttributes,
    UploadFileAttributesParentField,
    UploadFileVersionAttributes,
    UploadPart,
)

from soopervisor import credentials
from soopervisor.credentials import CredentialsError
from soopervisor.errors import ArtifactsNotFound, StorageUnavailable, UnsafePath, UsageError
from soopervisor.storage import ci_env
from soopervisor.storage.remote import ObjectInfo, Progress, RemoteStorage

SERVICE = "box"
#: CI credentials: field -> environment variable
ENV = ci_env.ENV[SERVICE]
#: a developer token from the app's console (60 minutes); for one-off jobs
DEVELOPER_TOKEN_ENV = ci_env.BOX_DEVELOPER_TOKEN_ENV
#: the client-credentials grant: with the client id and secret, who the app acts as
SUBJECT_TYPE_ENV = ci_env.BOX_SUBJECT_TYPE_ENV
SUBJECT_ID_ENV = ci_env.BOX_SUBJECT_ID_ENV
SUBJECT_TYPES = ("enterprise", "user")
#: where the login's redirect goes; must be listed in the app's configuration
REDIRECT_URI = "http://localhost:8765/callback"
LOGIN_HINT = f"soopervisor login {SERVICE}"

MB = 1000 * 1000
#: Box accepts chunked upload sessions for files of 20 MB and more (its documented minimum)
CHUNKED_MIN = 20 * MB
#: files from this size go through a chunked session: Box's direct upload takes files up to 50 MB
#: and Box recommends chunked uploads above (other clients switch there too); never below CHUNKED_MIN
CHUNKED_FROM = 50 * MB
#: attempts per request (the SDK's retry strategy: 429 and 5xx honouring Retry-After, and 401 → refresh)
MAX_ATTEMPTS = 5
#: retries of a dropped connection per request
MAX_RETRIES_ON_EXCEPTION = 3
#: rounds of re-sending the parts Box does not have after a part failed
PART_ROUNDS = 3
#: polls of a commit that Box is still processing (202)
COMMIT_POLLS = 10
READ_CHUNK = 1024 * 1024
#: bytes asked of a download stream at a time (the SDK's stream gathers them from 1 KiB pieces)
DOWNLOAD_CHUNK = 64 * 1024
#: times a download whose stream broke off is resumed from the byte it reached
DOWNLOAD_RESUMES = 5
#: what a stream that breaks off mid-way raises (requests wraps urllib3's, but not everywhere)
_DROPPED = (requests.RequestException, urllib3.exceptions.HTTPError)
#: longest name Box accepts, in characters
MAX_NAME = 255

_sleep = time.sleep
T = TypeVar("T")
#: the SDK's own (non-HTTP) errors that mean "no usable token"
_TOKEN_PROBLEM = re.compile(r"Developer token has expired|tokens not available|No access token", re.IGNORECASE)


# -- credentials ---------------------------------------------------------------------
def _fingerprint(token: str) -> str:
    # names the environment's refresh token in the store without keeping it
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def _env_hint() -> str:
    return (f"set {', '.join(ENV.values())} for CI (`{LOGIN_HINT} --ci` makes them), or "
            f"{ENV['client_id']}, {ENV['client_secret']}, {SUBJECT_TYPE_ENV} and {SUBJECT_ID_ENV} "
            f"for Box's client-credentials grant (or {DEVELOPER_TOKEN_ENV} for a single job)")


def _doc() -> str:
    from soopervisor.troubleshooting import page_url

    return page_url("how-to/box")


def _ccg_from_env() -> dict[str, str] | None:
    """The client-credentials grant's settings from the environment, None when its variables are unset."""
    subject_type = os.environ.get(SUBJECT_TYPE_ENV, "").strip().lower()
    subject_id = os.environ.get(SUBJECT_ID_ENV, "").strip()
    if not (subject_type or subject_id):
        return None
    if subject_type not in SUBJECT_TYPES or not subject_id.isdigit():
        raise CredentialsError(
            f"{SUBJECT_TYPE_ENV} must be 'enterprise' or 'user', and {SUBJECT_ID_ENV} the enterprise's or "
            f"the user's id (a number)",
            hint=f"'enterprise' with the enterprise id acts as the app's service account; see {_doc()}")
    client_id, client_secret = os.environ.get(ENV["client_id"]), os.environ.get(ENV["client_secret"])
    if not (client_id and client_secret):
        raise CredentialsError(
            f"Box's client-credentials grant needs {ENV['client_id']} and {ENV['client_secret']} too",
            hint="copy them from the Configuration tab of your Server Authentication (Client Credentials Grant) app")
    credentials.register([client_id, client_secret])  # the subject is no secret (and "enterprise" is a word)
    return {"client_id": client_id, "client_secret": client_secret,
            "subject_type": subject_type, "subject_id": subject_id}


def load_credentials() -> tuple[dict[str, Any], str]:
    """``(credentials, origin)``; origin is "developer token", "client credentials", "environment" or "stored"."""
    dev = os.environ.get(DEVELOPER_TOKEN_ENV)
    if dev:
        credentials.register(dev)
        return {"developer_token": dev}, "developer token"
    ccg = _ccg_from_env()
    if ccg:
        return ccg, "client credentials"
    stored = credentials.load(SERVICE)
    env = credentials.from_env(ENV)
    if env:
        # the env token is single-use; once refreshed, its successor was saved with its fingerprint
        if stored and stored.get("rotated_from") == _fingerprint(env["refresh_token"]):
            return stored, "environment"
        return {**env, "rotated_from": _fingerprint(env["refresh_token"])}, "environment"
    if stored and stored.get("refresh_token") and stored.get("client_id"):
        return stored, "stored"
    raise CredentialsError("not signed in to Box", hint=f"run `{LOGIN_HINT}`, or {_env_hint()}")


def describe() -> str:
    """For ``login --status``: whether Box credentials are there, and from where (never a token)."""
    try:
        creds, origin = load_credentials()
    except CredentialsError as e:  # none, or damaged
        return f"{e.message}; {e.hint}"
    if origin == "developer token":
        return f"using a developer token from {DEVELOPER_TOKEN_ENV} (valid 60 minutes)"
    if origin == "client credentials":
        who = "the app's service account" if creds["subject_type"] == "enterprise" else "a user"
        return f"signed in through Box's client-credentials grant (as {who}; no refresh token)"
    if origin == "environment":
        return "signed in through environment variables"
    return "signed in (stored tokens)"


class SavingTokenStorage(TokenStorage):
    """Keeps the current token and saves every new one at once: Box refresh tokens are single-use.

    With ``save=False`` (a sign-in made for CI) the tokens stay in memory only.
    """

    def __init__(self, creds: dict[str, Any], save: bool = True) -> None:
        self.creds = dict(creds)
        self.save = save
        self._lock = threading.Lock()
        self._token: AccessToken | None = None
        self.where = ""  # where the last token was saved
        if creds.get("refresh_token"):
            self._token = AccessToken(access_token=creds.get("access_token") or "",
                                      refresh_token=creds["refresh_token"], token_type="bearer")

    def store(self, token: AccessToken) -> None:
        with self._lock:
            self._token = token
            self.creds.update(access_token=token.access_token or "", refresh_token=token.refresh_token,
                              expires_at=time.time() + (token.expires_in or 0))
            credentials.register(self.creds)
            if not self.save:
                return
            try:
                self.where = credentials.save(SERVICE, self.creds)
            except OSError as e:
                # this run goes on with the new token in memory; the next one will ask to log in again
                self.where = f"nowhere ({type(e).__name__}: the config folder is not writable)"

    def get(self) -> AccessToken | None:
        return self._token

    def clear(self) -> None:
        self._token = None

    def expired(self) -> bool:
        # refresh a minute early rather than have requests fail with 401 first
        return not self.creds.get("access_token") or self.creds.get("expires_at", 0) < time.time() + 60

    def adopt_saved(self) -> bool:
        """Take the tokens another process saved meanwhile, when they continue this chain; whether it did.

        Called under the machine-wide refresh lock: a process that refreshed while this
        one waited spent the refresh token this one holds, and saved its successor.
        """
        if not self.save:
            return False
        try:
            saved = credentials.load(SERVICE)
        except CredentialsError:
            return False
        if (not saved or not saved.get("refresh_token") or saved["refresh_token"] == self.creds.get("refresh_token")
                or saved.get("client_id") != self.creds.get("client_id")
                or saved.get("rotated_from") != self.creds.get("rotated_from")):  # another chain (env vs login)
            return False
        with self._lock:
            self.creds = {**self.creds, **saved}
            self._token = AccessToken(access_token=saved.get("access_token") or "",
                                      refresh_token=saved["refresh_token"], token_type="bearer")
        return True


class _OAuth(BoxOAuth):
    """BoxOAuth that refreshes once for all threads and processes, and before the access token expires."""

    def __init__(self, config: OAuthConfig) -> None:
        super().__init__(config)
        self._refresh_lock = threading.Lock()
        self._refreshed_at = 0.0

    def retrieve_token(self, *, network_session: NetworkSession | None = None) -> AccessToken:
        storage = self.token_storage
        if isinstance(storage, SavingTokenStorage) and storage.expired():
            return self.refresh_token(network_session=network_session)
        return super().retrieve_token(network_session=network_session)

    def refresh_token(self, *, network_session: NetworkSession | None = None) -> AccessToken:
        storage = self.token_storage
        with self._refresh_lock:
            # several threads see the same 401; the single-use refresh token may be spent once only
            if time.monotonic() - self._refreshed_at < 30 and storage.get() is not None:
                return storage.get()
            # ... and so may several processes: the one that waited uses what the other saved
            with credentials.refresh_lock(SERVICE):
                if isinstance(storage, SavingTokenStorage) and storage.adopt_saved() and not storage.expired():
                    self._refreshed_at = time.monotonic()
                    return storage.get()
                token = super().refresh_token(network_session=network_session)
            self._refreshed_at = time.monotonic()
            return token


def network_session(session: requests.Session | None = None, base_urls: BaseUrls | None = None) -> NetworkSession:
    """The SDK's network session: our retry policy; ``session``/``base_urls`` reach a fake in tests."""
    return NetworkSession(
        network_client=BoxNetworkClient(requests_session=session) if session is not None else None,
        retry_strategy=BoxRetryStrategy(max_attempts=MAX_ATTEMPTS, max_retries_on_exception=MAX_RETRIES_ON_EXCEPTION),
        base_urls=base_urls,
    )


def _auth(creds: dict[str, Any]) -> BoxOAuth | BoxDeveloperTokenAuth | BoxCCGAuth:
    if creds.get("developer_token"):
        return BoxDeveloperTokenAuth(token=creds["developer_token"])
    if creds.get("subject_type"):
        # a 60-minute token per request of it; no refresh token, nothing saved
        subject = {"enterprise_id" if creds["subject_type"] == "enterprise" else "user_id": creds["subject_id"]}
        return BoxCCGAuth(CCGConfig(creds["client_id"], creds["client_secret"], **subject))
    return _OAuth(OAuthConfig(creds["client_id"], creds["client_secret"], token_storage=SavingTokenStorage(creds)))


def login(echo: Callable[[str], None], prompt: Callable[[str], str], *, client_id: str | None = None,
          client_secret: str | None = None, session: requests.Session | None = None) -> str:
    """Box's OAuth2 authorization-code sign-in; saves the tokens and returns where.

    The client id/secret default to ``SOOPERVISOR_BOX_CLIENT_ID``/``_SECRET``, else they are asked for.
    ``session`` is for tests (a requests session reaching a fake).
    """
    return _authorize(echo, prompt, client_id, client_secret, session, save=True).where


def login_for_ci(echo: Callable[[str], None], prompt: Callable[[str], str], *, client_id: str | None = None,
                 client_secret: str | None = None, session: requests.Session | None = None) -> dict[str, str]:
    """Sign in anew for a CI machine: nothing is stored on this machine; returns the environment
    variables CI needs (``SOOPERVISOR_BOX_CLIENT_ID``, ``_CLIENT_SECRET``, ``_REFRESH_TOKEN``) -> values.

    The refresh token starts a chain of its own: this machine's login is not touched, so the
    laptop and CI never spend each other's token. ``session`` is for tests.
    """
    storage = _authorize(echo, prompt, client_id, client_secret, session, save=False)
    values = {ENV["client_id"]: storage.creds["client_id"], ENV["client_secret"]: storage.creds["client_secret"],
              ENV["refresh_token"]: storage.creds["refresh_token"]}
    credentials.register(values)
    echo("This sign-in is CI's own: nothing was saved on this machine, and its login is unchanged.")
    echo("Its refresh token works once: the first run spends it and keeps the successor on its machine.")
    echo("That suits a self-hosted runner that keeps its home folder. GitHub-hosted runners start clean")
    echo(f"every job: there, use Box's client-credentials grant ({SUBJECT_TYPE_ENV}, {SUBJECT_ID_ENV});")
    echo(f"see {_doc()}")
    return values


def _authorize(echo: Callable[[str], None], prompt: Callable[[str], str], client_id: str | None,
               client_secret: str | None, session: requests.Session | None, save: bool) -> SavingTokenStorage:
    """The authorization-code flow: the link, the pasted code, the tokens (saved when ``save``)."""
    client_id = client_id or os.environ.get(ENV["client_id"])
    client_secret = client_secret or os.environ.get(ENV["client_secret"])
    if not (client_id and client_secret):
        echo("Create a Box app at https://app.box.com/developers/console: Custom App, User Authentication (OAuth 2.0);")
        echo(f"add the redirect URI {REDIRECT_URI}, tick 'Read and write all files and folders',")
        echo(f"and copy its client id and secret (or set {ENV['client_id']} and {ENV['client_secret']}).")
        client_id = client_id or prompt("Box client id").strip()
        client_secret = client_secret or prompt("Box client secret").strip()
    if not (client_id and client_secret):
        raise CredentialsError("no Box client id or secret given", hint=f"set {ENV['client_id']} and {ENV['client_secret']}")
    credentials.register([client_id, client_secret])
    storage = SavingTokenStorage({"client_id": client_id, "client_secret": client_secret}, save=save)
    auth = _OAuth(OAuthConfig(client_id, client_secret, token_storage=storage))
    state = secrets.token_urlsafe(16)
    url = auth.get_authorize_url(options=GetAuthorizeUrlOptions(redirect_uri=REDIRECT_URI, state=state))
    echo("1. Open this link and sign in to Box:")
    echo(f"   {url}")
    echo(f"2. Click 'Grant access'. The browser then opens {REDIRECT_URI}?... (the page may not load):")
    echo("   copy that whole address from the address bar, or just its code, within 30 seconds.")
    answer = prompt("Redirect address or code").strip()
    code = answer
    again = f"run `{LOGIN_HINT}{'' if save else ' --ci'}` again"
    if "?" in answer or answer.startswith("http"):
        query = {k: v[-1] for k, v in parse_qs(urlsplit(answer).query).items()}
        if query.get("error"):
            raise CredentialsError(f"Box sign-in was refused ({query['error']})", hint=again)
        if query.get("state") not in (None, state):
            raise CredentialsError("that address belongs to another sign-in", hint=again)
        code = query.get("code", "")
    if not code:
        raise CredentialsError("no authorization code given", hint=again)
    # saved under the refresh lock: no process of this machine saves a token of the old chain over it
    try:
        with credentials.refresh_lock(SERVICE) if save else contextlib.nullcontext():
            auth.get_tokens_authorization_code_grant(code, network_session=network_session(session))
    except BoxSDKError:
        raise CredentialsError(
            "Box did not accept that code (wrong, already used or older than 30 seconds)",
            hint=f"{again} and paste the address right away",
        ) from None
    return storage


# -- URL -------------------------------------------------------------------------------
def parse_url(url: str) -> tuple[str, list[str]]:
    """``(folder id, [folder names under it])`` named by a ``box://`` URL."""
    if not url.lower().startswith("box://"):
        raise UsageError(f"not a Box URL: {url!r}", hint="use box://FOLDER_ID or box://folder/names")
    rest = unquote(url[len("box://"):]).split("?", 1)[0].split("#", 1)[0]
    parts = [p for p in rest.split("/") if p]
    for part in parts:
        if part in (".", "..") or "\\" in part or "\0" in part or len(part) > 255:
            raise UsageError(
                f"invalid Box folder name in {url!r}",
                hint="use box://FOLDER_ID, box://FOLDER_ID/sub/folders or box://folder/names (no '..')",
            )
    if parts and parts[0].isdigit():
        return parts[0], parts[1:]
    return "0", parts


def open_url(url: str, *, session: requests.Session | None = None) -> RemoteStorage:
    """The storage named by ``box://...``; ``session`` (tests) reaches a fake instead of Box."""
    return RemoteStorage(BoxStore(url, session=session))


# -- the object store ------------------------------------------------------------------
def _status(e: BoxAPIError) -> int:
    return e.response_info.status_code


def _code(e: BoxAPIError) -> str:
    body = e.response_info.body or {}
    return str(e.response_info.code or body.get("error") or "")


def _limit_error(size: int | None, limit: int | None) -> StorageUnavailable:
    what = f"a file of {size / MB:.0f} MB" if size else "a file"
    per_file = f" ({limit / MB:.0f} MB per file)" if limit else ""
    return StorageUnavailable(
        f"{what} is larger than this Box account accepts{per_file}; free Box accounts take files up to 250 MB",
        hint="upgrade the Box plan, make the pipeline write smaller files, or store the artifacts elsewhere with --storage",
    )


def _boundary(fn: Callable[..., T]) -> Callable[..., T]:
    """No SDK exception leaves the store: its text may quote requests and would tell the user nothing."""
    @functools.wraps(fn)
    def wrapper(self: BoxStore, *args: Any, **kwargs: Any) -> T:
        try:
            return fn(self, *args, **kwargs)
        except BoxAPIError as e:
            raise StorageUnavailable(f"Box refused a request on {self.url} ({_status(e)} {_code(e)})".rstrip(),
                                     hint="check the folder in the URL still exists, then try again") from None

    return wrapper


class BoxStore:
    """:class:`~soopervisor.storage.remote.ObjectStore` on Box; keys are paths under the URL's folder."""

    def __init__(self, url: str, *, session: requests.Session | None = None,
                 base_urls: BaseUrls | None = None) -> None:
        self.url = url
        self.base_id, self.base_path = parse_url(url)
        creds, self.origin = load_credentials()
        self.client = BoxClient(_auth(creds), network_session=network_session(session, base_urls))
        self._folders: dict[str, str] = {}  # folder key ("" = the URL's folder) -> id
        self._files: dict[str, str] = {}  # key -> file id (a hint; re-checked when Box says 404)
        self._sizes: dict[str, int] = {}  # key -> size Box last reported, to tell a short download
        self._indexed: set[str] = set()  # folder keys whose files are all in _files
        self._lock = threading.RLock()
        self._max_upload: int | None = None

    # -- errors ------------------------------------------------------------------
    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn`` (the SDK retries 429/5xx honouring Retry-After); errors the user can act on made clear."""
        try:
            return fn(*args, **kwargs)
        except BoxAPIError as e:
            raise self._translate(e) from None
        except BoxSDKError as e:
            if _TOKEN_PROBLEM.search(e.message or ""):  # developer token expired, or no tokens at all
                raise CredentialsError("Box refused the credentials: the token has expired",
                                       hint=f"run `{LOGIN_HINT}` (or renew {DEVELOPER_TOKEN_ENV})") from None
            raise StorageUnavailable("Box could not be reached (the connection failed repeatedly)",
                                     hint="check the network, then try again") from None

    def _translate(self, e: BoxAPIError) -> Exception:
        status, code = _status(e), _code(e)
        if "oauth2/token" in (e.request_info.url or "") or code in ("invalid_grant", "invalid_client",
                                                                     "unauthorized_client"):
            return self._sign_in_refused(code, str((e.response_info.body or {}).get("error_description") or ""))
        if status == 401:
            return CredentialsError("Box refused the credentials: the token is expired or was revoked",
                                    hint=f"run `{LOGIN_HINT}` (or update {ENV['refresh_token']} in CI)")
        if code in ("item_name_invalid", "item_name_too_long"):
            return UnsafePath(f"Box refused a file or folder name in {self.url} ({code})",
                              hint="Box names hold at most 255 characters, no '/' or '\\', no leading or trailing "
                                   "space; rename the product in the pipeline")
        if code == "storage_limit_exceeded" or status == 507:
            return StorageUnavailable("your Box account is full (storage_limit_exceeded)",
                                      hint="free some space in Box, or store the artifacts elsewhere with --storage")
        if code == "file_size_limit_exceeded" or status == 413:
            return _limit_error(None, self._upload_limit(cached=True))
        if status == 429 or status >= 500:
            return StorageUnavailable(f"Box kept answering {status}; gave up after {MAX_ATTEMPTS} attempts",
                                      hint="try again in a few minutes; https://status.box.com")
        if status == 403:
            return StorageUnavailable(f"Box denied access to the folder of {self.url} ({code or 'forbidden'})",
                                      hint="check the folder id and that the app may read and write all files")
        if status in (404, 409):
            return e  # the callers decide: missing objects, names taken
        return StorageUnavailable(f"Box refused a request ({status} {code})".rstrip(),
                                  hint="try again; report it if it keeps happening")

    def _sign_in_refused(self, code: str, description: str) -> CredentialsError:
        """Why Box's token endpoint said no, for the way this process signs in, and the fix."""
        if self.origin == "client credentials":
            if code == "invalid_client":
                return CredentialsError(
                    "Box does not know this client id and secret (invalid_client)",
                    hint=f"copy them again from the app's Configuration tab into {ENV['client_id']} and "
                         f"{ENV['client_secret']}")
            if code == "unauthorized_client":
                return CredentialsError(
                    "Box refused the client-credentials grant for this app (unauthorized_client): it is not a "
                    "Server Authentication (Client Credentials Grant) app, or an admin has not authorized it",
                    hint=f"create a Server Authentication app and have it authorized in the Admin Console, or "
                         f"unset {SUBJECT_TYPE_ENV} and use a refresh token (`{LOGIN_HINT} --ci`); see {_doc()}")
            return CredentialsError(
                f"Box refused the client-credentials grant ({code or 'refused'}: the client id or secret is wrong, "
                f"or the app may not act as {SUBJECT_TYPE_ENV}={self._subject_type})",
                hint="'enterprise' with the enterprise id works for any authorized app; a user id needs 'App + "
                     "Enterprise Access' and 'Generate user access tokens', then the admin authorizing the app "
                     f"again; see {_doc()}")
        where = (f"in {ENV['refresh_token']}" if self.origin == "environment" else "stored on this machine")
        if code == "invalid_grant" and "expired" in description.lower():
            if self.origin == "environment":
                fix = (f"give CI a sign-in of its own: run `{LOGIN_HINT} --ci` on your laptop and set the secrets "
                       f"it prints, or use Box's client-credentials grant ({SUBJECT_TYPE_ENV}, {SUBJECT_ID_ENV}) so "
                       f"CI needs no refresh token; a runner that starts clean spends the token in its first run")
            else:
                fix = (f"run `{LOGIN_HINT}` to sign in here again, and give CI a sign-in of its own with "
                       f"`{LOGIN_HINT} --ci` (or Box's client-credentials grant)")
            return CredentialsError(
                f"the Box refresh token {where} was already used: Box refresh tokens work once, so another "
                f"machine holding the same token (your laptop and CI) probably refreshed first, or it is over 60 "
                f"days old",
                hint=f"{fix}; see {_doc()}")
        if code == "invalid_client":
            return CredentialsError("Box does not know this client id and secret (invalid_client)",
                                    hint=f"run `{LOGIN_HINT}` with your app's client id and secret")
        return CredentialsError(
            f"Box refused the refresh token {where} ({code or 'refused'}: revoked, or issued to another app)",
            hint=f"run `{LOGIN_HINT}` (in CI: set {ENV['refresh_token']} from `{LOGIN_HINT} --ci`)")

    @property
    def _subject_type(self) -> str:
        return os.environ.get(SUBJECT_TYPE_ENV, "").strip().lower()

    def _upload_limit(self, cached: bool = False) -> int | None:
        if self._max_upload is None and not cached:
            me = self._call(self.client.users.get_user_me, fields=["max_upload_size", "space_amount", "space_used"])
            self._max_upload = me.max_upload_size
        return self._max_upload

    # -- folders and ids ---------------------------------------------------------
    def _items(self, folder_id: str) -> Iterator[Any]:
        marker = None
        while True:
            page = self._call(self.client.folders.get_folder_items, folder_id, fields=["type", "id", "name", "size"],
                              usemarker=True, marker=marker, limit=1000)
            yield from page.entries or []
            marker = page.next_marker
            if not marker:
                return

    def _child(self, folder_id: str, name: str, kind: str) -> Any | None:
        folded = name.casefold()  # Box names are unique case-insensitively
        for item in self._items(folder_id):
            if item.type == kind and item.name.casefold() == folded:
                return item
        return None

    def _mkdir(self, parent_id: str, name: str) -> str:
        try:
            return self._call(self.client.folders.create_folder, name, CreateFolderParent(id=parent_id)).id
        except BoxAPIError as e:
            if _status(e) != 409:
                raise
            conflicts = (e.response_info.context_info or {}).get("conflicts")
            conflict = conflicts[0] if isinstance(conflicts, list) and conflicts else conflicts
            if isinstance(conflict, dict) and conflict.get("type") == "folder":
                return conflict["id"]
            raise StorageUnavailable(f"a file named {name!r} in Box stands where {self.url} needs a folder",
                                     hint="rename or remove that file, or choose another folder") from None

    def _index(self, folder_key: str, folder_id: str) -> list[tuple[str, Any]]:
        """List a folder once and remember the ids of what it holds; ``[(key, item)]``.

        Afterwards a name missing from the cache is taken as absent without asking
        Box again: an upload that then meets the name (409) or a remembered id that
        went stale (404) looks it up afresh, so the cache only saves round trips.
        """
        entries = []
        for item in self._items(folder_id):
            entries.append((f"{folder_key}/{item.name}" if folder_key else item.name, item))
        with self._lock:
            inside = folder_key + "/" if folder_key else ""
            for key in [k for k in self._files if k.startswith(inside) and "/" not in k[len(inside):]]:
                del self._files[key]
                self._sizes.pop(key, None)
            for key, item in entries:
                if item.type == "file":
                    self._files[key] = item.id
                    if item.size is not None:
                        self._sizes[key] = item.size
                elif item.type == "folder":
                    self._folders[key] = item.id
            self._indexed.add(folder_key)
        return entries

    def _folder_id(self, folder_key: str, create: bool) -> str | None:
        """The id of a folder (its key relative to the URL's folder); None when missing and not ``create``."""
        with self._lock:  # one thread creates a folder; the others then find it
            if folder_key in self._folders:
                return self._folders[folder_key]
            if not folder_key:
                folder_id: str | None = self.base_id
                for name in self.base_path:
                    item = self._child(folder_id, name, "folder")
                    folder_id = item.id if item else (self._mkdir(folder_id, name) if create else None)
                    if folder_id is None:
                        return None
                self._folders[""] = folder_id
                return folder_id
            parent, _, name = folder_key.rpartition("/")
            parent_id = self._folder_id(parent, create)
            if parent_id is None:
                return None
            if parent not in self._indexed:
                self._index(parent, parent_id)
            if folder_key not in self._folders:
                if not create:
                    return None
                self._folders[folder_key] = self._mkdir(parent_id, name)
                self._indexed.add(folder_key)  # new, hence empty
            return self._folders[folder_key]

    @staticmethod
    def _split(key: str) -> tuple[str, str]:
        folder, _, name = key.rpartition("/")
        return folder, name

    def _file_id(self, key: str, fresh: bool = False) -> str | None:
        folder, _ = self._split(key)
        with self._lock:
            if not fresh and (key in self._files or folder in self._indexed):
                return self._files.get(key)
        folder_id = self._folder_id(folder, create=False)
        if folder_id is None:
            return None
        self._index(folder, folder_id)
        return self._files.get(key)

    def _with_file(self, key: str, fn: Callable[[str], T]) -> T:
        """``fn(file id)``, looking the id up again once when a remembered one is stale (404)."""
        for fresh in (False, True):
            file_id = self._file_id(key, fresh=fresh)
            if file_id is None:
                break
            try:
                return fn(file_id)
            except BoxAPIError as e:
                if _status(e) != 404:
                    raise
        raise ArtifactsNotFound(f"{key} is not in {self.url}", hint="soopervisor artifacts list shows what is stored")

    # -- ObjectStore ---------------------------------------------------------------
    service = "Box"

    def refused(self, key: str) -> str | None:
        """Why Box would refuse a name on ``key``'s path (see :func:`name_problem`), or None."""
        for name in key.split("/"):
            why = name_problem(name)
            if why:
                return why
        return None

    @_boundary
    def check_writable(self) -> None:
        me = self._call(self.client.users.get_user_me, fields=["max_upload_size", "space_amount", "space_used"])
        self._max_upload = me.max_upload_size
        if me.space_amount and me.space_used is not None and me.space_used >= me.space_amount:
            raise StorageUnavailable("your Box account is full",
                                     hint="free some space in Box, or store the artifacts elsewhere with --storage")
        folder_id = self._folder_id("", create=True)
        try:
            self._index("", folder_id)
        except BoxAPIError as e:
            if _status(e) != 404:
                raise
            raise StorageUnavailable(f"Box has no folder {self.base_id} that this account can see ({self.url})",
                                     hint="copy the id from the folder's address in the Box web app, or use box://0") from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            yield from self._list(prefix)
        except BoxAPIError as e:
            raise StorageUnavailable(f"Box refused to list {self.url} ({_status(e)} {_code(e)})".rstrip(),
                                     hint="check the folder in the URL still exists, then try again") from None

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        folder_key = prefix.rstrip("/")
        folder_id = self._folder_id(folder_key, create=False)
        if folder_id is None:
            return
        stack = [(folder_key, folder_id)]
        while stack:
            key, fid = stack.pop()
            for child, item in self._index(key, fid):
                if item.type == "folder":
                    stack.append((child, item.id))
                elif item.type == "file":
                    yield ObjectInfo(child, item.size or 0)

    def _stream(self, file_id: str, offset: int = 0) -> Any:
        rng = f"bytes={offset}-" if offset else None
        stream = self._call(self.client.downloads.download_file, file_id, range=rng)
        if stream is None:  # 202: Box has not finished processing the file
            raise StorageUnavailable("Box is still processing a file", hint="try again in a minute")
        return stream

    def _fetch(self, key: str, file_id: str, sink: Callable[[bytes], None]) -> None:
        """The file's bytes into ``sink``; a stream that breaks off is asked for again from the byte it
        reached (HTTP Range), up to DOWNLOAD_RESUMES times. The SDK retries a request that fails to start."""
        size = self._sizes.get(key)
        offset = drops = 0
        while True:
            stream = self._stream(file_id, offset)
            dropped = False
            while True:
                try:
                    chunk = stream.read(DOWNLOAD_CHUNK)
                except _DROPPED:
                    dropped = True
                    # the SDK's stream buffers what it got towards a read: keep those bytes too
                    tail = getattr(stream, "_buffer", None)
                    if isinstance(tail, bytes) and tail:
                        sink(tail)
                        offset += len(tail)
                    break
                if not chunk:
                    break
                sink(chunk)
                offset += len(chunk)
            if not dropped and (size is None or offset >= size):
                return
            drops += 1  # broke off, or ended short of the size Box listed
            if drops > DOWNLOAD_RESUMES:
                raise StorageUnavailable(
                    f"the download of {key} from Box broke off {drops} times (last at byte {offset})",
                    hint="check the network, then try again")
            _sleep(min(30.0, 0.5 * 2 ** drops))

    @_boundary
    def read(self, key: str) -> bytes:
        parts: list[bytes] = []

        def fetch(file_id: str) -> None:
            parts.clear()  # a stale id looked up again starts over
            self._fetch(key, file_id, parts.append)

        self._with_file(key, fetch)
        return b"".join(parts)

    @_boundary
    def download(self, key: str, dest: Path, progress: Progress) -> None:
        def fetch(file_id: str) -> None:
            with open(dest, "wb") as f:
                def sink(chunk: bytes) -> None:
                    f.write(chunk)
                    progress(len(chunk))

                self._fetch(key, file_id, sink)

        self._with_file(key, fetch)

    @_boundary
    def write(self, key: str, data: bytes) -> None:
        self._put_small(key, lambda: io.BytesIO(data))

    @_boundary
    def upload(self, key: str, src: Path, progress: Progress) -> None:
        size = src.stat().st_size
        limit = self._upload_limit()
        if limit and size > limit:
            raise _limit_error(size, limit)  # before a byte is sent
        if size < max(CHUNKED_FROM, CHUNKED_MIN):
            self._put_small(key, lambda: open(src, "rb"))  # noqa: SIM115 - opened per attempt, closed by _put_small
            progress(size)
            return
        with open(src, "rb") as f:
            self._put_chunked(key, f, size, progress)

    def _put_small(self, key: str, opener: Callable[[], Any]) -> None:
        folder, name = self._split(key)
        folder_id = self._folder_id(folder, create=True)
        file_id = self._file_id(key)
        for _ in range(3):
            with opener() as stream:
                try:
                    if file_id is None:
                        files = self._call(self.client.uploads.upload_file,
                                           UploadFileAttributes(name=name, parent=UploadFileAttributesParentField(id=folder_id)),
                                           stream)
                    else:
                        files = self._call(self.client.uploads.upload_file_version, file_id,
                                           UploadFileVersionAttributes(name=name), stream)
                except BoxAPIError as e:
                    file_id = self._after_conflict(e, key)
                    continue
            self._remember(key, files.entries[0])
            return
        raise StorageUnavailable(f"cannot replace {key} in {self.url}", hint="try again")

    def _remember(self, key: str, item: Any) -> None:
        with self._lock:
            self._files[key] = item.id
            if getattr(item, "size", None) is not None:
                self._sizes[key] = item.size
            else:
                self._sizes.pop(key, None)

    def _after_conflict(self, e: BoxAPIError, key: str) -> str | None:
        """The id to upload a new version to, after Box refused to create (409) or found no file (404)."""
        if _status(e) == 409:
            conflicts = (e.response_info.context_info or {}).get("conflicts")
            conflict = conflicts[0] if isinstance(conflicts, list) and conflicts else conflicts
            if isinstance(conflict, dict) and conflict.get("type") == "file":
                return conflict["id"]
            return self._file_id(key, fresh=True)
        if _status(e) == 404:  # the remembered file is gone
            return self._file_id(key, fresh=True)
        raise e

    def _put_chunked(self, key: str, f: Any, size: int, progress: Progress) -> None:
        folder, name = self._split(key)
        folder_id = self._folder_id(folder, create=True)
        file_id = self._file_id(key)
        up = self.client.chunked_uploads
        for attempt in range(2):  # a session that vanishes (expired, 404) restarts once
            try:
                if file_id is None:
                    session = self._call(up.create_file_upload_session, folder_id, size, name)
                else:
                    session = self._call(up.create_file_upload_session_for_existing_file, file_id, size, file_name=name)
            except BoxAPIError as e:
                file_id = self._after_conflict(e, key)
                continue
            try:
                files = self._send_parts(session, f, size, progress)
            except _SessionLost:
                self._abort(session)
                if attempt:
                    raise StorageUnavailable(f"Box lost the upload session of {key} twice", hint="try again") from None
                continue
            except BaseException:
                self._abort(session)  # Box keeps no half file; free the session's parts now
                raise
            self._remember(key, files.entries[0])
            return
        raise StorageUnavailable(f"cannot upload {key} to {self.url}", hint="try again")

    def _abort(self, session: Any) -> None:
        try:
            self.client.chunked_uploads.delete_file_upload_session_by_url(session.session_endpoints.abort)
        except BoxSDKError:
            pass  # best effort: an abandoned session expires by itself

    def _send_parts(self, session: Any, f: Any, size: int, progress: Progress) -> Any:
        up = self.client.chunked_uploads
        endpoints, part_size = session.session_endpoints, session.part_size
        offsets = list(range(0, size, part_size))
        done: dict[int, UploadPart] = {}
        whole = hashlib.sha1()
        for _ in range(PART_ROUNDS):
            failed = False
            for offset in offsets:
                if offset in done:
                    continue
                f.seek(offset)
                chunk = f.read(min(part_size, size - offset))
                digest = "sha=" + base64.b64encode(hashlib.sha1(chunk).digest()).decode()
                rng = f"bytes {offset}-{offset + len(chunk) - 1}/{size}"
                try:
                    part = self._call(up.upload_file_part_by_url, endpoints.upload_part, io.BytesIO(chunk), digest, rng).part
                except BoxAPIError as e:
                    if _status(e) == 404:
                        raise _SessionLost() from None
                    raise
                except StorageUnavailable:
                    failed = True  # retried parts exhausted; ask Box what it has, then resend the rest
                    continue
                done[offset] = part
                progress(len(chunk))
            if not failed:
                break
            done = self._parts_box_has(endpoints.list_parts, done)
        missing = [o for o in offsets if o not in done]
        if missing:
            raise StorageUnavailable(f"Box kept refusing parts of an upload ({len(missing)} missing)",
                                     hint="try again in a few minutes")
        f.seek(0)
        while block := f.read(READ_CHUNK):
            whole.update(block)
        parts = [UploadPart(part_id=p.part_id, offset=p.offset, size=p.size, sha_1=p.sha_1)
                 for p in sorted(done.values(), key=lambda p: p.offset)]
        digest = "sha=" + base64.b64encode(whole.digest()).decode()
        for _ in range(COMMIT_POLLS):
            try:
                files = self._call(up.create_file_upload_session_commit_by_url, endpoints.commit, parts, digest)
            except BoxAPIError as e:
                if _status(e) == 404:
                    raise _SessionLost() from None
                raise
            if files is not None:
                return files
            _sleep(1)  # 202: Box is still processing the parts
        raise StorageUnavailable("Box did not finish assembling an uploaded file", hint="try again later")

    def _parts_box_has(self, list_url: str, done: dict[int, UploadPart]) -> dict[int, UploadPart]:
        try:
            listed = self._call(self.client.chunked_uploads.get_file_upload_session_parts_by_url, list_url)
        except (BoxAPIError, StorageUnavailable):
            return done
        return {**done, **{p.offset: p for p in listed.entries or []}}

    @_boundary
    def copy(self, src_key: str, dst_key: str) -> None:
        folder, name = self._split(dst_key)
        folder_id = self._folder_id(folder, create=True)
        self.delete([dst_key])  # Box copies never overwrite

        def copy(file_id: str) -> Any:
            return self._call(self.client.files.copy_file, file_id, CopyFileParent(id=folder_id), name=name)

        for _ in range(2):
            try:
                new = self._with_file(src_key, copy)
                self._remember(dst_key, new)
                return
            except BoxAPIError as e:
                if _status(e) != 409:
                    raise
                self.delete([dst_key])  # created meanwhile
        raise StorageUnavailable(f"cannot replace {dst_key} in {self.url}", hint="try again")

    @_boundary
    def delete(self, keys: list[str]) -> None:
        for key in keys:
            try:
                self._with_file(key, lambda fid: self._call(self.client.files.delete_file_by_id, fid))
            except ArtifactsNotFound:
                pass
            with self._lock:
                self._files.pop(key, None)
                self._sizes.pop(key, None)


    def remove_folder(self, key: str) -> None:
        """Remove the folder ``key`` and all in it (a folder already gone is fine)."""
        folder_id = self._folder_id(key, create=False)
        if folder_id is not None:
            try:
                self._call(self.client.folders.delete_folder_by_id, folder_id, recursive=True)
            except ArtifactsNotFound:
                pass
        inside = key + "/"
        with self._lock:
            for cache in (self._files, self._sizes, self._folders):
                for k in [k for k in cache if k == key or k.startswith(inside)]:
                    del cache[k]
            self._indexed = {k for k in self._indexed if k != key and not k.startswith(inside)}


def name_problem(name: str) -> str | None:
    """Why Box would refuse (or silently change) the file or folder name ``name``, or None.

    Box's rules: at most 255 characters; not ``.`` or ``..``; no ``/`` or ``\\``; no
    non-printable characters (files: removed without a word); no leading or trailing space.
    Names inside a set are percent-encoded (:func:`soopervisor.storage.remote.encode_name`), which
    clears all but the length: the encoding triples every byte outside ``A-Za-z0-9-_.~``.
    """
    if len(name) > MAX_NAME:
        return f"stored as a name of {len(name)} characters once percent-encoded; Box allows {MAX_NAME}"
    if name and set(name) == {"."}:
        return "Box reserves names made of dots only"
    if "/" in name or "\\" in name:
        return "Box names cannot contain '/' or '\\'"
    if not name.isprintable():
        return "Box removes non-printable characters from names"
    if name != name.strip(" "):
        return "Box refuses names that begin or end with a space"
    return None


class _SessionLost(Exception):
    """The upload session is gone (expired or aborted); the upload starts over."""
