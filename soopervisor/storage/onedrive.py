r"""OneDrive storage: ``onedrive://path`` through Microsoft Graph, with msal for sign-in.

``onedrive://soopervisor/artifacts`` names the folder ``/soopervisor/artifacts``
under the root of the signed-in user's OneDrive (Graph's
``/me/drive/root:/soopervisor/artifacts:``), created on first write. Sets are
stored as ``path/<project>/<commit>/<run>/<name>``, real folders.

Transfers: files up to :data:`SIMPLE_LIMIT` (4 MB) are one ``PUT …/content``;
larger ones go through an upload session (``createUploadSession``), in
:data:`CHUNK_SIZE` fragments (multiples of 320 KiB, as Graph requires). After a
failed fragment the session is asked for its ``nextExpectedRanges`` and the
upload continues from there; an expired session starts over. Copies are
server-side (``/copy`` answers 202 and a monitor URL, polled until done).
Throttling (429/503 with ``Retry-After``) and dropped connections are retried.

Names: keys are percent-encoded per segment (:func:`remote.encode_name`), so
the characters OneDrive refuses (``: * ? " < > | \``) and trailing dots or
spaces never reach it. What still bites an encoded key is checked by
:meth:`GraphStore.refused` before a set is sent: the reserved names (``CON``,
``PRN``, ``AUX``, ``NUL``, ``COM0``–``COM9``, ``LPT0``–``LPT9``, also with an
extension; ``.lock``; ``desktop.ini``), ``_vti_`` anywhere in a name, a name
longer than :data:`MAX_NAME` once encoded, and a whole path longer than
:data:`MAX_PATH` characters (Microsoft's "Restrictions and limitations in
OneDrive and SharePoint"). ``~$`` at a name's start cannot occur (``$`` is
encoded).

Sign-in (``soopervisor login onedrive``): msal's device-code flow — the
terminal shows a code to enter at https://microsoft.com/devicelogin — with the
scopes ``Files.ReadWrite offline_access``; the refresh token goes to the
keyring (or the 0600 file). Microsoft rotates refresh tokens: each new one is
saved as soon as it arrives. The sign-in needs an application (client) ID: an
app registration in a Microsoft Entra directory (a personal account without a
directory gets one by signing up for Azure — registering apps outside a
directory is no longer possible), with *Accounts in any organizational
directory and personal Microsoft accounts*, *Allow public client flows* on and
the delegated Graph permission ``Files.ReadWrite``. docs/how-to/onedrive.md
has the steps.

The authority (who may sign in) is ``SOOPERVISOR_ONEDRIVE_AUTHORITY``:
``consumers`` (personal Microsoft accounts, the default), ``organizations``
(work or school), ``common`` (either), a tenant ID or domain, or a full
``https://`` authority URL (sovereign clouds, tests). Login says which one it
uses and stores it with the token, so later refreshes go to the same one. A
failed sign-in names its cause and fix from Microsoft's error codes
(:func:`sign_in_error`).

CI: ``SOOPERVISOR_ONEDRIVE_CLIENT_ID`` and ``SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN``
(plus ``SOOPERVISOR_ONEDRIVE_AUTHORITY`` when not ``consumers``), from
:func:`login_for_ci`. CI never keeps the renewed refresh tokens, so the one in
its secret dies :data:`REFRESH_TOKEN_DAYS` days after it was issued;
``SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN_ISSUED`` (its date) lets a run warn from
day :data:`WARN_AFTER_DAYS` on, once, with the command that renews it.

``SOOPERVISOR_GRAPH_URL`` replaces ``https://graph.microsoft.com/v1.0``. msal
accepts only https authorities; a plain ``http://127.0.0.1`` authority (a local
test server) is reached through an HTTP session that rewrites that one origin.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from soopervisor import credentials
from soopervisor.credentials import CredentialsError
from soopervisor.errors import ArtifactsNotFound, StorageUnavailable, UnsafePath, UsageError
from soopervisor.storage import ci_env
from soopervisor.storage.remote import ObjectInfo, Progress, RemoteStorage, RetryLater, retry_delay
from soopervisor.troubleshooting import page_url

SERVICE = "onedrive"
#: field -> environment variable, for CI (both are needed)
ENV = {field: var for field, var in ci_env.ENV[SERVICE].items() if not var.endswith("?")}
#: the date CI's refresh token was issued (ISO, e.g. 2026-12-02): not a credential, never masked
ISSUED_ENV = "SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN_ISSUED"
GRAPH_URL_ENV = "SOOPERVISOR_GRAPH_URL"
AUTHORITY_ENV = "SOOPERVISOR_ONEDRIVE_AUTHORITY"
GRAPH_URL = "https://graph.microsoft.com/v1.0"
AUTHORITY_HOST = "https://login.microsoftonline.com"
#: who signs in when nothing else is said: personal Microsoft accounts (their OneDrive is the target)
DEFAULT_AUTHORITY = "consumers"
AUTHORITY = f"{AUTHORITY_HOST}/{DEFAULT_AUTHORITY}"
#: msal adds offline_access (a refresh token) itself and refuses it in this list
SCOPES = ["Files.ReadWrite"]

#: Microsoft's refresh tokens last 90 days ("refresh tokens", Microsoft identity platform); CI never
#: stores the renewed ones, so the one in its secret stops working 90 days after it was issued
REFRESH_TOKEN_DAYS = 90
#: from this age on, a run that signs in with CI's refresh token warns (once)
WARN_AFTER_DAYS = 80

KiB = 1024
#: files up to this size are one PUT; Graph documents simple upload "up to 4 MB"
SIMPLE_LIMIT = 4 * 1024 * KiB
#: upload-session fragment: Graph requires multiples of 320 KiB (and at most 60 MiB)
CHUNK_SIZE = 32 * 320 * KiB
#: attempts of one request on throttling and transient errors
MAX_TRIES = 6
#: how long a server-side copy may take before we give up
COPY_TIMEOUT = 600.0
HTTP_TIMEOUT = 120

#: OneDrive's limit on a whole path ("/folder/…/name"), counted in characters
MAX_PATH = 400
#: the longest name (one path segment) OneDrive and the file systems it syncs to hold
MAX_NAME = 255
#: names Windows reserves for devices; OneDrive refuses them, also with an extension (CON.txt)
RESERVED_DEVICES = frozenset(["con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
                              *(f"lpt{i}" for i in range(10))])
#: whole names OneDrive refuses (case-insensitive)
RESERVED_NAMES = frozenset([".lock", "desktop.ini"])

LOGIN_HINT = "soopervisor login onedrive"
CI_LOGIN_HINT = "soopervisor login onedrive --ci"
FULL_HINT = "free space in your OneDrive (and empty its recycle bin), or store elsewhere with --storage"
DOCS_PAGE = "how-to/onedrive"


def _env_hint() -> str:
    return f"{LOGIN_HINT} (in CI: set {' and '.join(ENV.values())})"


# -- names -------------------------------------------------------------------------
def refused_name(name: str) -> str | None:
    """Why OneDrive refuses ``name`` (one path segment as stored), or None."""
    low = name.lower()
    if low in RESERVED_NAMES:
        return f"OneDrive reserves the name {name}"
    if low.split(".")[0] in RESERVED_DEVICES:
        return (f"{name} is a name Windows reserves for a device (CON, PRN, AUX, NUL, COM0-COM9, LPT0-LPT9, "
                "with or without an extension)")
    if low.startswith("~$"):
        return "OneDrive refuses names starting with ~$"
    if "_vti_" in low:
        return "OneDrive refuses names containing _vti_"
    if len(name) > MAX_NAME:
        return f"the name is {len(name)} characters as stored (percent-encoded); OneDrive holds at most {MAX_NAME}"
    return None


# -- credentials -------------------------------------------------------------------
def load_credentials() -> tuple[dict[str, str], str]:
    """(client_id/refresh_token[/authority], "environment" or "stored login"); CredentialsError if none."""
    return credentials.required(SERVICE, ENV, "OneDrive", hint=_env_hint())


def authority_url(value: str | None = None) -> str:
    """The authority URL of ``value`` (else ``SOOPERVISOR_ONEDRIVE_AUTHORITY``, else ``consumers``).

    ``consumers``, ``organizations``, ``common``, a tenant ID or domain become
    ``https://login.microsoftonline.com/<it>``; an ``https://`` (or local ``http://``) URL is taken as it is.
    """
    raw = (value or os.environ.get(AUTHORITY_ENV) or DEFAULT_AUTHORITY).strip().rstrip("/")
    if raw.lower().startswith(("https://", "http://")):
        return raw
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]*", raw):
        return f"{AUTHORITY_HOST}/{raw}"
    raise UsageError(f"{AUTHORITY_ENV}={raw!r} is not a sign-in authority",
                     hint="use consumers (personal Microsoft accounts, the default), organizations (work or school), "
                          "common (either), your directory's tenant ID, or an https:// authority URL",
                     topic="cloud-credentials")


def _chosen_authority(stored: str | None = None) -> str:
    """The authority to use: the environment variable, else the one the stored login used, else consumers."""
    return authority_url(os.environ.get(AUTHORITY_ENV) or stored or DEFAULT_AUTHORITY)


#: the stored login keeps its authority behind this prefix: credentials.save masks every stored string from
#: then on, and "common" or "organizations" masked in every log would be absurd; the prefixed form never
#: occurs in any output
_STORED = "not-a-secret/authority:"


def _stored_authority(data: dict[str, Any]) -> str | None:
    value = data.get("authority")
    return value[len(_STORED):] if isinstance(value, str) and value.startswith(_STORED) else None


def _tenant(url: str) -> str:
    return urlsplit(url).path.strip("/").split("/")[-1].lower()


def who_signs_in(url: str) -> str:
    """Which accounts an authority signs in, for messages."""
    tenant = _tenant(url)
    return {"consumers": "personal Microsoft accounts", "organizations": "work or school accounts",
            "common": "personal, work or school accounts"}.get(tenant, f"accounts of the directory {tenant}")


class _PlainHttpOrigin(requests.Session):
    """Sends requests for ``https://HOST:PORT`` to ``http://HOST:PORT``: msal insists on https
    authorities, local test servers speak plain http."""

    def __init__(self, origin: str) -> None:
        super().__init__()
        self._https, self._http = "https://" + origin, "http://" + origin

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        if url.startswith(self._https):
            url = self._http + url[len(self._https):]
        return super().request(method, url, *args, **kwargs)


def _msal_app(client_id: str, authority: str | None = None) -> Any:
    import msal

    authority = shown = authority or _chosen_authority()
    kwargs: dict[str, Any] = {}
    parts = urlsplit(authority)
    if parts.hostname != urlsplit(AUTHORITY_HOST).hostname:
        # another cloud or a test server: trusted as given (no instance discovery at login.microsoftonline.com)
        kwargs["instance_discovery"] = False
    if parts.scheme == "http":
        authority = "https://" + authority[len("http://"):]
        kwargs["http_client"] = _PlainHttpOrigin(parts.netloc)
    try:
        return msal.PublicClientApplication(client_id, authority=authority, timeout=HTTP_TIMEOUT, **kwargs)
    except ValueError:  # msal: the authority answered, but not with its OpenID configuration
        raise CredentialsError(
            f"the Microsoft sign-in authority {shown} is unknown (a tenant that does not exist?)",
            hint=f"check {AUTHORITY_ENV}: consumers (personal accounts), organizations, common, or your "
                 "directory's tenant ID (Microsoft Entra admin center → Overview)") from None


# -- sign-in errors ----------------------------------------------------------------
_AADSTS = re.compile(r"AADSTS(\d+)")


def error_codes(result: dict[str, Any]) -> list[int]:
    """The AADSTS numbers of a token-endpoint error (``error_codes``, else those in ``error_description``)."""
    codes = [int(c) for c in result.get("error_codes") or [] if str(c).isdigit()]
    return codes or [int(c) for c in _AADSTS.findall(str(result.get("error_description") or ""))]


def sign_in_error(result: dict[str, Any], *, client_id: str, authority: str, source: str,
                  issued: date | None = None) -> CredentialsError | StorageUnavailable:
    """A failed sign-in or refresh as one line of what and why, with the fix.

    ``source`` is "login", "environment" or "stored login". Only the error and its AADSTS numbers are
    shown: ``error_description`` may quote request details.
    """
    error = str(result.get("error") or "unknown_error")
    codes = error_codes(result)
    code = f", {', '.join(f'AADSTS{c}' for c in codes)}" if codes else ""
    tag = f"({error}{code})"
    steps = page_url(DOCS_PAGE)
    who = who_signs_in(authority)
    again = LOGIN_HINT if source != "environment" else (
        f"{CI_LOGIN_HINT} signs in anew for CI; put what it prints in the CI secrets "
        f"({ENV['refresh_token']}, {ISSUED_ENV})")
    account_types = ("in the app registration: Authentication → Supported account types → Accounts in any "
                     "organizational directory and personal Microsoft accounts")

    def fail(what: str, hint: str) -> CredentialsError:
        return CredentialsError(f"OneDrive sign-in failed: {what} {tag}", hint=hint)

    if 700016 in codes or 700011 in codes or (error == "unauthorized_client" and not codes):
        return fail(f"Microsoft does not know the application (client) ID {client_id} for {who} at {authority}",
                    f"check the ID (the app's Overview page) and that the app was registered for personal Microsoft "
                    f"accounts with public client flows allowed; the steps: {steps}")
    if 9002332 in codes:
        return fail(f"the app {client_id} is registered for work or school accounts only, and {authority} signs in "
                    "personal Microsoft accounts",
                    f"{account_types}; or, for a work or school account, set {AUTHORITY_ENV}=organizations")
    if 9002331 in codes:
        return fail(f"the app {client_id} is registered for personal Microsoft accounts only, and {authority} signs "
                    "in work or school accounts",
                    f"unset {AUTHORITY_ENV} (or set it to consumers) to sign in with a personal account")
    if 50194 in codes:
        return fail(f"the app {client_id} is registered for its own directory only, which {authority} cannot use",
                    f"{account_types}; or set {AUTHORITY_ENV} to your directory's tenant ID (a work or school "
                    "account of that directory)")
    if 50020 in codes or 500208 in codes or 50034 in codes:
        return fail(f"the account you signed in with is not one the app accepts at {authority} (which signs in {who})",
                    f"sign in with the right kind of account, or {account_types}; a personal account uses "
                    f"{AUTHORITY_ENV}=consumers (the default), a work or school account organizations")
    if 7000218 in codes or error == "invalid_client":
        return fail(f"the app {client_id} does not allow public client flows, which the device-code sign-in needs",
                    "in the app registration: Authentication → Advanced settings → Allow public client flows: Yes, "
                    f"Save; then {LOGIN_HINT}")
    if 65001 in codes or 90094 in codes:
        return fail("nobody has consented to the app's permission Files.ReadWrite (or the consent was removed)",
                    f"{again}, and accept the permissions it asks for; for a work or school account whose "
                    "organization requires it, an admin grants consent (Enterprise applications → the app → "
                    "Permissions)")
    if error == "authorization_declined" or 65004 in codes:
        return fail("the sign-in was declined at microsoft.com/devicelogin",
                    f"run {LOGIN_HINT} again and accept the permissions")
    if error in ("expired_token", "authorization_pending") or 70019 in codes:
        return fail("the code was not entered in time (it lasts 15 minutes)",
                    f"run {LOGIN_HINT} again and enter the new code at https://microsoft.com/devicelogin")
    if error == "bad_verification_code" or 70018 in codes:
        return fail("Microsoft did not recognise the code entered", f"run {LOGIN_HINT} again")
    if 90002 in codes or error == "invalid_tenant":
        return fail(f"the directory in {authority} does not exist",
                    f"check {AUTHORITY_ENV}: consumers, organizations, common, or your tenant ID")
    if error in ("invalid_grant", "interaction_required", "no_refresh_token") or codes and codes[0] in (
            70000, 70008, 700082, 50173, 50076, 50079, 50078):
        if 700082 in codes or 70008 in codes:
            why = "has expired (its refresh token was too old or unused too long)"
        elif 50173 in codes:
            why = "was revoked (a password change or a sign-out everywhere)"
        elif error == "interaction_required" or 50076 in codes or 50079 in codes:
            why = "needs an interactive sign-in (multifactor or a policy)"
        else:
            why = "has expired or was revoked"
        age = ""
        if source == "environment" and issued is not None:
            days = (_today() - issued).days
            age = (f"; the refresh token in {ENV['refresh_token']} was issued {days} days ago (a refresh token "
                   f"kept in CI lasts {REFRESH_TOKEN_DAYS} days)")
        return CredentialsError(f"the OneDrive sign-in {why} {tag}{age}", hint=again)
    if error == "temporarily_unavailable" or 90033 in codes or 50033 in codes:
        return StorageUnavailable(f"the Microsoft sign-in service is busy {tag}", hint="try again in a few minutes")
    return fail("Microsoft refused it", f"{again}; the steps: {steps}")


# -- CI's refresh token and its age ------------------------------------------------
def _today() -> date:
    return datetime.now(UTC).date()


def _parse_day(text: str) -> date | None:
    text = text.strip()
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def ci_token_issued() -> date | None:
    """The date in ``SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN_ISSUED`` (None when unset or not a date)."""
    return _parse_day(os.environ.get(ISSUED_ENV) or "")


def ci_token_notice(today: date | None = None) -> str | None:
    """The warning about CI's refresh token near (or past) its 90 days; None when there is nothing to say."""
    text = os.environ.get(ISSUED_ENV)
    if not text or not os.environ.get(ENV["refresh_token"]):
        return None
    issued = _parse_day(text)
    if issued is None:
        return (f"{ISSUED_ENV}={text!r} is not a date (YYYY-MM-DD), so the age of the OneDrive refresh token is "
                f"unknown; {CI_LOGIN_HINT} prints the right value")
    today = today or _today()
    age = (today - issued).days
    if age < WARN_AFTER_DAYS:
        return None
    ends = issued + timedelta(days=REFRESH_TOKEN_DAYS)
    if age >= REFRESH_TOKEN_DAYS:
        when = f"is {age} days old: Microsoft stops accepting it after {REFRESH_TOKEN_DAYS} days ({ends})"
    else:
        when = (f"is {age} days old and stops working around {ends} ({REFRESH_TOKEN_DAYS} days after it was issued; "
                "CI never keeps the renewed ones)")
    return (f"the OneDrive refresh token in {ENV['refresh_token']} (issued {issued}) {when}; renew it: "
            f"{CI_LOGIN_HINT}, then update the CI secrets it prints")


_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_once(text: str, out: Callable[[str], None] | None = None) -> bool:
    """Say ``text`` as a soopervisor warning once per process (on stderr by default); whether it was said."""
    with _warned_lock:
        if text in _warned:
            return False
        _warned.add(text)
    line = f"soopervisor: warning: {text}"
    if out is not None:
        out(line)
    else:
        print(line, file=sys.stderr, flush=True)
    return True


class _Tokens:
    """Access tokens from the refresh token; a rotated refresh token is saved at once."""

    def __init__(self, data: dict[str, str], source: str) -> None:
        self.client_id = data["client_id"]
        self.refresh_token = data["refresh_token"]
        self.stored_authority = _stored_authority(data) if source == "stored login" else None
        self.source = source
        self._app: Any = None
        self._access: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def get(self, force: bool = False, stale: str | None = None) -> str:
        """A valid access token; ``force`` renews unless another thread already replaced ``stale``."""
        with self._lock:
            if self._access and not (force and self._access == stale) and time.time() < self._expires - 60:
                return self._access
            authority = _chosen_authority(self.stored_authority)
            if self._app is None:
                try:
                    self._app = _msal_app(self.client_id, authority)
                except requests.HTTPError as e:  # a 5xx of the sign-in service: retried like Graph's
                    raise RetryLater(_backoff(None, 0), f"sign-in service {e.response.status_code}") from None
            result = self._app.acquire_token_by_refresh_token(self.refresh_token, scopes=SCOPES)
            if "access_token" not in result:
                raise sign_in_error(result, client_id=self.client_id, authority=authority, source=self.source,
                                    issued=ci_token_issued())
            credentials.register(result["access_token"])
            self._access = result["access_token"]
            self._expires = time.time() + float(result.get("expires_in", 3600))
            new = result.get("refresh_token")
            if new and new != self.refresh_token:
                credentials.register(new)
                self.refresh_token = new
                if self.source == "stored login":  # the old one may stop working: keep the new one
                    saved = {"client_id": self.client_id, "refresh_token": new}
                    if self.stored_authority:
                        saved["authority"] = _STORED + self.stored_authority
                    credentials.save(SERVICE, saved)
            return self._access


# -- errors ------------------------------------------------------------------------
def _graph_error(resp: requests.Response) -> tuple[str, str, list[str]]:
    """(code, message, inner codes) of a Graph error body ``{"error": {"code", "message", "innererror"}}``."""
    try:
        error = resp.json()["error"]
        inner, nested = [], error.get("innererror") or error.get("innerError")
        while isinstance(nested, dict) and len(inner) < 10:
            if nested.get("code"):
                inner.append(str(nested["code"]))
            nested = nested.get("innererror") or nested.get("innerError")
        return str(error.get("code", "")), str(error.get("message", "")), inner
    except (ValueError, KeyError, TypeError, AttributeError):
        return "", "", []


def _backoff(resp: requests.Response | None, attempt: int) -> float:
    return retry_delay(resp.headers.get("Retry-After") if resp is not None else None, attempt)


# -- the object store --------------------------------------------------------------
class GraphStore:
    """Objects as files under one OneDrive folder; see the module docstring."""

    #: the service's name in messages (RemoteStorage's check of names before a put)
    service = "OneDrive"

    def __init__(self, url: str, base: str, creds: dict[str, str], source: str) -> None:
        self.url = url
        self.base = base  # "soopervisor/artifacts"
        self.graph = (os.environ.get(GRAPH_URL_ENV) or GRAPH_URL).rstrip("/")
        self.tokens = _Tokens(creds, source)
        self._local = threading.local()
        self._lock = threading.Lock()  # folder creation
        self._folders: dict[str, str] = {}  # folder key ("" = base) -> item id
        self._drive_id: str | None = None
        self.sleep: Callable[[float], None] = time.sleep

    # plumbing
    @property
    def _http(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _path_url(self, key: str) -> str:
        full = "/".join(p for p in (self.base, key) if p)
        return f"{self.graph}/me/drive/root:/{quote(full, safe='/')}:"

    def _item_url(self, item_id: str) -> str:
        return f"{self.graph}/me/drive/items/{quote(item_id, safe='')}"

    def _check(self, resp: requests.Response, what: str, attempt: int,
               accept: tuple[int, ...] = ()) -> requests.Response:
        """``resp`` when it succeeded or its status is in ``accept``; else an error, or RetryLater."""
        status = resp.status_code
        if status < 400 or status in accept:
            return resp
        code, message, inner = _graph_error(resp)
        if status in (429, 500, 502, 503, 504) or code in ("activityLimitReached", "serviceNotAvailable"):
            raise RetryLater(_backoff(resp, attempt), f"{status} {code}".strip())
        if status == 507 or code in ("quotaLimitReached", "insufficientStorage"):
            raise StorageUnavailable(f"OneDrive storage is full while {what}", hint=FULL_HINT)
        if status == 401:
            raise CredentialsError("OneDrive refused the sign-in (401)", hint=LOGIN_HINT)
        if "spo license" in message.lower():
            # a personal account signed in at its own Entra directory: a directory user has no OneDrive
            raise CredentialsError(
                f"the sign-in reached a Microsoft Entra directory without OneDrive, not your OneDrive ({message})",
                hint=f"a personal Microsoft account signs in at consumers: unset {AUTHORITY_ENV} (or set it to "
                     f"consumers), then {LOGIN_HINT}")
        if status == 400 and ({"invalidPath", "pathIsTooLong", "parameterIsTooLong"} & set(inner)):
            raise UnsafePath(f"OneDrive refuses the name or path length of {what} ({', '.join(inner)})",
                             hint="rename the product in the pipeline (shorter, no reserved name), or use a "
                                  "shorter onedrive:// folder")
        if status == 404:
            raise ArtifactsNotFound(f"not found in OneDrive: {what}")
        if status == 403:
            raise StorageUnavailable(f"OneDrive denied {what} ({code or status})",
                                     hint=f"check the onedrive:// URL; sign in again with {LOGIN_HINT}")
        raise StorageUnavailable(f"OneDrive refused {what}: HTTP {status} {code} {message}".rstrip(),
                                 hint="check the onedrive:// URL; soopervisor login --status shows the sign-in")

    def _call(self, method: str, url: str, what: str, *, auth: bool = True, accept: tuple[int, ...] = (),
              headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        """One Graph request with retries; a 401 renews the access token once.

        Statuses in ``accept`` come back to the caller; a 404 otherwise is ArtifactsNotFound.
        """
        renewed = False
        for attempt in range(MAX_TRIES):
            sent = dict(headers or {})
            token = None
            try:
                if auth:  # inside: a dropped connection to the token endpoint is retried too
                    token = self.tokens.get()
                    sent["Authorization"] = f"Bearer {token}"
                resp = self._http.request(method, url, headers=sent, timeout=HTTP_TIMEOUT, **kwargs)
                if resp.status_code == 401 and auth and not renewed:
                    renewed = True  # the access token expired early or was revoked: renew once
                    self.tokens.get(force=True, stale=token)
                    continue
                return self._check(resp, what, attempt, accept)
            except RetryLater as r:
                delay, why = r.delay, r.why
            except (requests.ConnectionError, requests.Timeout) as e:
                delay, why = _backoff(None, attempt), type(e).__name__
            if attempt == MAX_TRIES - 1:
                raise StorageUnavailable(f"OneDrive kept failing while {what} ({why})", hint="try again later")
            self.sleep(delay)
        raise AssertionError("unreachable")

    def _drive(self) -> dict[str, Any]:
        drive = self._call("GET", f"{self.graph}/me/drive", "reading the drive").json()
        self._drive_id = drive.get("id")
        return drive

    def _folder(self, key: str, create: bool) -> str | None:
        """The item id of folder ``key`` ("" = the base folder), made when ``create``."""
        if key in self._folders:
            return self._folders[key]
        resp = self._call("GET", self._path_url(key), f"finding folder {key or self.base}", accept=(404,))
        if resp.status_code == 404:
            if not create:
                return None
            full = "/".join(p for p in (self.base, key) if p)
            head, _, name = full.rpartition("/")
            if key:
                parent = self._folder(key.rpartition("/")[0], create=True)
            elif head:
                parent = self._root_folder(head)
            else:
                parent = "root"
            with self._lock:
                resp = self._call("POST", f"{self._item_url(parent)}/children", f"creating folder {name}",
                                  json={"name": name, "folder": {}, "@microsoft.graph.conflictBehavior": "fail"}, accept=(409,))
                if resp.status_code == 409:  # made by another thread or process meanwhile
                    resp = self._call("GET", self._path_url(key), f"finding folder {key}")
        item = resp.json()
        if "folder" not in item:
            raise StorageUnavailable(f"{self.url}/{key} is a file, not a folder", hint="use another onedrive:// path")
        self._folders[key] = item["id"]
        return item["id"]

    def _root_folder(self, path: str) -> str:
        """Item id of a folder above the base (``a/b`` of base ``a/b/c``), made as needed."""
        url = f"{self.graph}/me/drive/root:/{quote(path, safe='/')}:"
        resp = self._call("GET", url, f"finding folder {path}", accept=(404,))
        if resp.status_code != 404:
            return resp.json()["id"]
        head, _, name = path.rpartition("/")
        parent = self._root_folder(head) if head else "root"
        resp = self._call("POST", f"{self._item_url(parent)}/children", f"creating folder {name}",
                          json={"name": name, "folder": {}, "@microsoft.graph.conflictBehavior": "fail"}, accept=(409,))
        if resp.status_code == 409:
            return self._call("GET", url, f"finding folder {path}").json()["id"]
        return resp.json()["id"]

    def _parent_and_name(self, key: str) -> tuple[str, str]:
        folder, _, name = key.rpartition("/")
        parent = self._folder(folder, create=True)
        assert parent is not None
        return parent, name

    # ObjectStore
    def refused(self, key: str) -> str | None:
        """Why OneDrive would refuse the name of ``key`` (a reserved name, too long), or None."""
        for segment in key.split("/"):
            why = refused_name(segment)
            if why:
                return why
        length = len(f"/{self.base}/{key}")
        if length > MAX_PATH:
            return (f"its path in OneDrive (/{self.base}/…) would be {length} characters as stored (percent-encoded); "
                    f"OneDrive allows {MAX_PATH}")
        return None

    def check_writable(self) -> None:
        self._folder("", create=True)
        quota = self._drive().get("quota") or {}
        if quota.get("state") == "exceeded" or (quota.get("remaining") is not None and int(quota["remaining"]) <= 0):
            raise StorageUnavailable("OneDrive storage is full", hint=FULL_HINT)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        start = prefix.rstrip("/")
        folder = self._folder(start, create=False)
        if folder is None:
            return
        stack = [(folder, start)]
        while stack:
            fid, key = stack.pop()
            url: str | None = f"{self._item_url(fid)}/children?$select=id,name,size,folder,file&$top=200"
            while url:
                resp = self._call("GET", url, f"listing {self.url}/{key}", accept=(404,))
                if resp.status_code == 404:
                    break  # deleted meanwhile
                page = resp.json()
                for item in page.get("value", []):
                    child = f"{key}/{item['name']}" if key else item["name"]
                    if "folder" in item:
                        self._folders.setdefault(child, item["id"])
                        stack.append((item["id"], child))
                    else:
                        yield ObjectInfo(child, int(item.get("size", 0)))
                url = page.get("@odata.nextLink")

    def read(self, key: str) -> bytes:
        resp = self._call("GET", f"{self._path_url(key)}/content", f"reading {key}")
        return resp.content

    def write(self, key: str, data: bytes) -> None:
        if len(data) > SIMPLE_LIMIT:  # a manifest carries the run's log: it may outgrow one PUT
            with tempfile.TemporaryDirectory(prefix="soopervisor-") as tmp:
                path = Path(tmp) / "object"
                path.write_bytes(data)
                self.upload(key, path, lambda n: None)
            return
        parent, name = self._parent_and_name(key)
        self._put_small(parent, name, data, key)

    def _put_small(self, parent: str, name: str, data: bytes, key: str) -> None:
        url = f"{self._item_url(parent)}:/{quote(name, safe='')}:/content?@microsoft.graph.conflictBehavior=replace"
        self._call("PUT", url, f"uploading {key}", data=data,
                   headers={"Content-Type": "application/octet-stream"})

    def upload(self, key: str, src: Path, progress: Progress) -> None:
        size = src.stat().st_size
        parent, name = self._parent_and_name(key)
        if size <= SIMPLE_LIMIT:
            self._put_small(parent, name, src.read_bytes(), key)
            progress(size)
            return
        for _ in range(3):  # an expired or lost session starts over
            if self._session_upload(parent, name, key, src, size, progress):
                return
        raise StorageUnavailable(f"OneDrive kept dropping the upload session of {key}", hint="try again later")

    def _session_upload(self, parent: str, name: str, key: str, src: Path, size: int, progress: Progress) -> bool:
        """One upload session; False when the session vanished (start a new one)."""
        url = f"{self._item_url(parent)}:/{quote(name, safe='')}:/createUploadSession"
        session = self._call("POST", url, f"starting the upload of {key}",
                             json={"item": {"@microsoft.graph.conflictBehavior": "replace"}}).json()
        upload_url = session["uploadUrl"]  # pre-authenticated: no Authorization header (documented)
        offset, sent, failures = 0, 0, 0
        try:
            with open(src, "rb") as f:
                while offset < size:
                    f.seek(offset)
                    chunk = f.read(min(CHUNK_SIZE, size - offset))
                    headers = {"Content-Range": f"bytes {offset}-{offset + len(chunk) - 1}/{size}",
                               "Content-Length": str(len(chunk))}
                    try:
                        resp = self._http.put(upload_url, data=chunk, headers=headers, timeout=HTTP_TIMEOUT)
                        if resp.status_code == 404:
                            progress(-sent)
                            return False
                        if resp.status_code != 416:  # 416: those bytes arrived already; ask where to go on
                            self._check(resp, f"uploading {key}", failures, accept=(404,))
                    except (RetryLater, requests.ConnectionError, requests.Timeout) as e:
                        failures += 1
                        if failures >= MAX_TRIES:
                            raise StorageUnavailable(f"OneDrive kept failing while uploading {key}",
                                                     hint="try again later; the set stays incomplete") from None
                        self.sleep(e.delay if isinstance(e, RetryLater) else _backoff(None, failures))
                        resp = None
                    if resp is not None and resp.status_code in (200, 201):
                        progress(size - sent)
                        return True
                    if resp is not None and resp.status_code == 202:
                        failures = 0
                        ranges = resp.json().get("nextExpectedRanges") or []
                    else:  # after a failure, the session says which bytes it still needs
                        status = self._call("GET", upload_url, f"resuming the upload of {key}", auth=False, accept=(404,))
                        if status.status_code == 404:
                            progress(-sent)
                            return False
                        ranges = status.json().get("nextExpectedRanges") or []
                    if not ranges:
                        # every byte arrived but the final answer was lost: the item is complete
                        progress(size - sent)
                        return True
                    offset = int(str(ranges[0]).split("-")[0])
                    if offset != sent:
                        progress(offset - sent)
                        sent = offset
        except BaseException:
            try:  # free the server's temporary space; it also expires by itself
                self._http.delete(upload_url, timeout=10)
            except requests.RequestException:
                pass
            raise
        return True

    def download(self, key: str, dest: Path, progress: Progress) -> None:
        """The file into ``dest``; a stream that breaks off resumes from the byte it reached (Range)."""
        got, stalled = 0, 0
        with open(dest, "wb") as f:
            while True:
                headers = {"Range": f"bytes={got}-"} if got else {}
                resp = self._call("GET", f"{self._path_url(key)}/content", f"downloading {key}",
                                  stream=True, headers=headers)
                if got and resp.status_code != 206:  # the server sent it all again: start over
                    progress(-got)
                    f.seek(0)
                    f.truncate()
                    got = 0
                before = got
                try:
                    with resp:
                        # small blocks: what arrived before a break is kept, not thrown away with the block
                        for block in resp.iter_content(64 * KiB):
                            f.write(block)
                            got += len(block)
                            progress(len(block))
                    return
                except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError):
                    stalled = 0 if got > before else stalled + 1
                    if stalled >= MAX_TRIES:
                        raise StorageUnavailable(f"OneDrive kept failing while downloading {key}",
                                                 hint="try again later") from None
                    self.sleep(_backoff(None, stalled))

    def copy(self, src_key: str, dst_key: str) -> None:
        src = self._call("GET", self._path_url(src_key), f"copying {src_key}").json()
        parent, name = self._parent_and_name(dst_key)
        if self._drive_id is None:
            self._drive()
        # OneDrive personal ignores conflictBehavior on copy: make room first
        self.delete([dst_key])
        resp = self._call("POST", f"{self._item_url(src['id'])}/copy", f"copying {src_key}",
                          json={"parentReference": {"driveId": self._drive_id, "id": parent}, "name": name})
        monitor = resp.headers.get("Location")
        if resp.status_code != 202 or not monitor:
            return  # done at once
        self._wait_copy(monitor, src_key)

    def _wait_copy(self, monitor: str, what: str) -> None:
        """Poll the copy's monitor URL (no Authorization: it is pre-authenticated)."""
        deadline = time.monotonic() + COPY_TIMEOUT
        delay = 0.05
        while time.monotonic() < deadline:
            resp = self._call("GET", monitor, f"copying {what}", auth=False, allow_redirects=False)
            if resp.status_code == 303:
                return  # redirected to the new item: done
            status = (resp.json() if resp.content else {}).get("status")
            if status == "completed":
                return
            if status == "failed":
                code = ((resp.json().get("error") or {}).get("code")) or "failed"
                if code in ("quotaLimitReached", "insufficientStorage"):
                    raise StorageUnavailable(f"OneDrive storage is full while copying {what}", hint=FULL_HINT)
                raise StorageUnavailable(f"OneDrive could not copy {what} ({code})", hint="try again later")
            self.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise StorageUnavailable(f"OneDrive did not finish copying {what} in {COPY_TIMEOUT:.0f} s",
                                 hint="try again later")

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._call("DELETE", self._path_url(key), f"deleting {key}", accept=(404,))  # 404: already gone

    def remove_folder(self, key: str) -> None:
        """Remove the folder ``key`` and all in it (Graph deletes a folder with its children; 404: gone)."""
        self._call("DELETE", self._path_url(key), f"deleting the folder {key}", accept=(404,))


# -- entry points ------------------------------------------------------------------
def parse_url(url: str) -> str:
    """The folder path of ``onedrive://path``; UsageError when empty, unsafe or a name OneDrive refuses."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "onedrive":
        raise UsageError(f"not a OneDrive URL: {url!r}", hint="use onedrive://folder/path")
    names = [p for p in f"{parts.netloc}{parts.path}".split("/") if p]
    if not names or any(n in (".", "..") or ":" in n for n in names) or parts.query or parts.fragment:
        raise UsageError(
            f"bad OneDrive URL {url!r}",
            hint="use onedrive://folder/path: a folder under the root of your OneDrive, made on first use",
        )
    for name in names:
        why = refused_name(name)
        if why:
            raise UsageError(f"bad OneDrive URL {url!r}: {why}",
                             hint="use onedrive://folder/path with another folder name")
    return "/".join(names)


def open_url(url: str) -> RemoteStorage:
    """A storage on ``onedrive://path``; credentials from the environment, else the stored login."""
    base = parse_url(url)
    data, source = load_credentials()
    if source == "environment":
        notice = ci_token_notice()
        if notice:
            warn_once(notice)
    return RemoteStorage(GraphStore(f"onedrive://{base}", base, data, source))


def _client_id(echo: Callable[[str], None], prompt: Callable[[str], str], stored: dict[str, Any]) -> str:
    client_id = os.environ.get(ENV["client_id"]) or stored.get("client_id")
    if not client_id:
        echo("OneDrive sign-in needs an application (client) ID: an app registration with public client "
             f"flows allowed and the Files.ReadWrite permission; the steps: {page_url(DOCS_PAGE)}")
        client_id = prompt("Application (client) ID").strip()
    if not client_id:
        raise UsageError("an application (client) ID is needed", hint=f"the steps: {page_url(DOCS_PAGE)}",
                         topic="cloud-credentials")
    return client_id


def _device_sign_in(echo: Callable[[str], None], client_id: str, authority: str) -> dict[str, Any]:
    """msal's device-code flow at ``authority``; the token response (with a refresh token) or CredentialsError."""
    source_env = os.environ.get(AUTHORITY_ENV)
    chosen = f"from {AUTHORITY_ENV}" if source_env else f"the default; set {AUTHORITY_ENV}=organizations for a " \
                                                         "work or school account"
    echo(f"Signing in at {authority} ({who_signs_in(authority)}; {chosen})")
    try:
        app = _msal_app(client_id, authority)
        flow = app.initiate_device_flow(scopes=SCOPES)
        if "user_code" not in flow:
            raise sign_in_error(flow, client_id=client_id, authority=authority, source="login")
        echo(flow["message"])  # "To sign in, use a web browser to open ... and enter the code ..."
        result = app.acquire_token_by_device_flow(flow)
    except requests.RequestException as e:
        raise StorageUnavailable(f"the Microsoft sign-in service did not answer ({type(e).__name__})",
                                 hint="check the network; try again later") from None
    if "refresh_token" not in result:
        raise sign_in_error(result if "error" in result else {"error": "no_refresh_token"},
                            client_id=client_id, authority=authority, source="login")
    credentials.register(result.get("access_token", ""))
    credentials.register(result["refresh_token"])
    return result


def login(echo: Callable[[str], None], prompt: Callable[[str], str]) -> str:
    """Device-code sign-in (personal Microsoft accounts unless the authority says otherwise); stores the
    refresh token and the authority it belongs to. Returns where."""
    stored = credentials.load(SERVICE) or {}
    client_id = _client_id(echo, prompt, stored)
    raw = os.environ.get(AUTHORITY_ENV) or _stored_authority(stored) or DEFAULT_AUTHORITY
    authority = authority_url(raw)
    result = _device_sign_in(echo, client_id, authority)
    saved = {"client_id": client_id, "refresh_token": result["refresh_token"]}
    if raw != DEFAULT_AUTHORITY:
        saved["authority"] = _STORED + raw
    return credentials.save(SERVICE, saved)


def login_for_ci(echo: Callable[[str], None], prompt: Callable[[str], str]) -> dict[str, str]:
    """Sign in anew for a CI machine: nothing is stored on this machine; returns the environment
    variables CI needs -> values.

    ``SOOPERVISOR_ONEDRIVE_CLIENT_ID``, ``SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN`` (both registered as
    credentials), ``SOOPERVISOR_ONEDRIVE_REFRESH_TOKEN_ISSUED`` (today, UTC: runs warn when the token nears
    its 90 days) and, when it is not ``consumers``, ``SOOPERVISOR_ONEDRIVE_AUTHORITY``. A sign-in of its own:
    the laptop's refresh token is untouched, and neither renewal stops the other.
    """
    stored = credentials.load(SERVICE) or {}
    client_id = _client_id(echo, prompt, stored)
    raw = os.environ.get(AUTHORITY_ENV) or _stored_authority(stored) or DEFAULT_AUTHORITY
    authority = authority_url(raw)
    result = _device_sign_in(echo, client_id, authority)
    credentials.register(client_id)
    issued = _today()
    out = {ENV["client_id"]: client_id, ENV["refresh_token"]: result["refresh_token"], ISSUED_ENV: issued.isoformat()}
    if raw != DEFAULT_AUTHORITY:
        out[AUTHORITY_ENV] = raw
    echo(f"This refresh token works in CI until about {issued + timedelta(days=REFRESH_TOKEN_DAYS)} "
         f"({REFRESH_TOKEN_DAYS} days: CI never keeps the renewed ones); runs warn from day {WARN_AFTER_DAYS}. "
         f"Renew it with {CI_LOGIN_HINT}.")
    return out


def describe() -> str:
    """One line for ``login --status``: signed in or not, and from where; never a token."""
    try:
        _, source = load_credentials()
    except CredentialsError:
        return f"not signed in ({LOGIN_HINT}, or set {' and '.join(ENV.values())})"
    line = f"signed in (from the {source})"
    if source == "environment" and os.environ.get(ISSUED_ENV):
        issued = ci_token_issued()
        if issued is None:
            return f"{line}; {ISSUED_ENV} is not a date (YYYY-MM-DD)"
        age = (_today() - issued).days
        renew = f": renew it with {CI_LOGIN_HINT}" if age >= WARN_AFTER_DAYS else ""
        return f"{line}; its refresh token was issued {issued}, {age} days ago (it lasts {REFRESH_TOKEN_DAYS}){renew}"
    return line
