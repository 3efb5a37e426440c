"""Artifacts off the node: inputs in and artifacts out over a one-run HTTP exchange on the host.

A run on a Swarm node or in a Kubernetes pod cannot be reached with the local engine's
``put_archive``/``get_archive``. Instead the host opens an :class:`Exchange` for the run:
a small HTTP server with a random per-run token. The container starts with
:func:`bootstrap_command`, which (as root) reads the exchange's URL and token from a
root-only secret file, fetches the input tars and extracts them at ``/``, runs the real
command as an unprivileged user, then uploads the tar of the collected folder.

Why an exchange rather than uploads from the node to storage: no storage credential ever
leaves the host, and the token dies with the run. The price: the node must reach the
host's exchange address (``exchange_address`` of the engine entry).

Engine-neutral: nothing here knows Swarm or Kubernetes.
"""
from __future__ import annotations

import hmac
import http.server
import secrets
import socket
import threading
from collections.abc import Iterator
from typing import Any, Self

from . import CollectTo

#: where the bootstrap reads the exchange's URL and token (two lines); root-only (mode 0400, uid 0)
EXCHANGE_PATH = "/run/secrets/soopervisor-exchange"
#: where the bootstrap reads the pipeline's secret environment (a JSON object), when present; root-only
ENV_PATH = "/run/secrets/soopervisor-env"
#: the bootstrap's exit codes of its own (the pipeline's code is passed through otherwise)
INPUTS_FAILED = 85
UPLOAD_FAILED = 86
#: the pipeline user's id when none is given
PIPELINE_USER = 1000
#: the largest artifacts upload taken (bytes)
MAX_UPLOAD = 64 << 30
_CHUNK = 1 << 16


class UploadTooLarge(Exception):
    pass


class Exchange:
    """A one-run HTTP server: ``GET /inputs`` serves the input tars, ``PUT /artifacts`` takes the artifacts tar.

    Both need ``Authorization: Bearer <token>``; any other request, or a wrong token, gets
    401/404 and nothing of its body is read. The upload is streamed into ``collect_to`` in
    chunks (never buffered whole) and refused past ``max_upload`` bytes; only one upload is
    taken. Use it as a context manager: the server runs between enter and exit.
    """

    def __init__(self, archives: list[bytes], collect_to: CollectTo | None, *, bind: str = "127.0.0.1",
                 advertise: str | None = None, max_upload: int = MAX_UPLOAD) -> None:
        self.archives = list(archives)
        self.collect_to = collect_to
        self.bind = bind
        self.advertise = advertise
        self.max_upload = max_upload
        self.token = secrets.token_urlsafe(32)
        #: whether collect_to got a whole artifacts tar
        self.collected = False
        #: why an upload failed (no secret in it), None when none did
        self.error: str | None = None
        #: how often the inputs were served (a retried fetch counts twice)
        self.served = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._uploading = False
        self._upload_done = threading.Event()
        self._upload_done.set()

    # -- life -----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the exchange is not open")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The address the container connects to, ``http://<advertise or bind>:<port>``."""
        host = self.advertise or self.bind
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        return f"http://{host}:{self.port}"

    def secret_file(self) -> bytes:
        """The content of the bootstrap's exchange file: the URL and the token, one per line."""
        return f"{self.url}\n{self.token}\n".encode()

    def open(self) -> Exchange:
        """Start serving (once: opening an open exchange changes nothing)."""
        if self._server is not None:
            return self
        handler = _handler(self)
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET

        class _Server(http.server.ThreadingHTTPServer):
            address_family = family
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request: Any, client_address: Any) -> None:
                # a peer that resets the connection (a container killed mid-request, a probe that
                # hangs up): the request is lost, not our bug; socketserver would print a
                # traceback into the host's terminal
                pass

        self._server = _Server((self.bind, 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="soopervisor-exchange", daemon=True)
        self._thread.start()
        return self

    def close(self, wait_upload: float = 30.0) -> None:
        """Stop serving. An upload still streaming is given ``wait_upload`` seconds, then cut off."""
        if self._server is None:
            return
        if not self._upload_done.wait(wait_upload):
            self._closing.set()  # the upload's reader raises at its next chunk
            self._upload_done.wait(10)
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def wait_upload(self, timeout: float) -> bool:
        """Wait for an upload in progress to end; False when it still runs after ``timeout`` seconds."""
        return self._upload_done.wait(timeout)

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------------
    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer "):].strip().encode(), self.token.encode())

    def _inputs_length(self) -> int:
        return sum(len(a) for a in self.archives)

    def _begin_upload(self) -> bool:
        with self._lock:
            if self._uploading or self.collected or self._closing.is_set():
                return False
            self._uploading = True
            self._upload_done.clear()
            return True

    def _end_upload(self) -> None:
        with self._lock:
            self._uploading = False
            self._upload_done.set()


def _handler(exchange: Exchange) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "soopervisor-exchange"
        sys_version = ""
        protocol_version = "HTTP/1.1"
        timeout = 600  # a stalled peer does not hold a thread forever

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests are not logged: nothing of them belongs in the host's output

        def _reply(self, code: int, text: str = "") -> None:
            body = (text + "\n").encode() if text else b""
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if body:
                self.wfile.write(body)
            self.close_connection = True

        def _gate(self, path: str) -> bool:
            """True when the request may go on; otherwise answered (and its body never read)."""
            if not exchange._authorized(self.headers.get("Authorization")):
                self._reply(401, "unauthorized")
                return False
            if self.path != path:
                self._reply(404, "not found")
                return False
            return True

        def do_GET(self) -> None:
            if not self._gate("/inputs"):
                return
            exchange.served += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/x-tar")
            self.send_header("Content-Length", str(exchange._inputs_length()))
            self.end_headers()
            try:
                for archive in exchange.archives:
                    view = memoryview(archive)
                    for start in range(0, len(view), _CHUNK):
                        self.wfile.write(view[start:start + _CHUNK])
            except OSError:
                self.close_connection = True  # the container went away; it fetches again or fails

        def do_PUT(self) -> None:
            if not self._gate("/artifacts"):
                return
            if exchange.collect_to is None:
                self._reply(404, "this run collects nothing")
                return
            length = self.headers.get("Content-Length")
            chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
            if length is None and not chunked:
                self._reply(411, "a length or chunked encoding is needed")
                return
            if length is not None and (not length.isdigit() or int(length) > exchange.max_upload):
                self._reply(413, f"the artifacts exceed {exchange.max_upload} bytes")
                return
            if not exchange._begin_upload():
                self._reply(409, "artifacts were already uploaded")
                return
            try:
                body = self._chunked() if chunked else self._sized(int(length))
                exchange.collect_to(_capped(body, exchange.max_upload, exchange._closing))
                # a tar reader may stop at the end-of-archive blocks: the rest is drained, not trusted
                for _ in body:
                    pass
                exchange.collected = True
                self._reply(200, "stored")
            except UploadTooLarge:
                exchange.error = f"the artifacts exceed {exchange.max_upload} bytes"
                self._reply(413, exchange.error)
            except _Cut as e:
                exchange.error = str(e)
                self.close_connection = True
            except Exception as e:  # noqa: BLE001 - storing failed (a full disk, a broken tar): the run says why
                exchange.error = f"storing the artifacts failed: {type(e).__name__}: {e}"[:500]
                try:
                    self._reply(500, "storing the artifacts failed")
                except OSError:
                    self.close_connection = True
            finally:
                exchange._end_upload()

        def do_POST(self) -> None:
            self._reply(401 if not exchange._authorized(self.headers.get("Authorization")) else 404, "no")

        do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_POST

        def _sized(self, length: int) -> Iterator[bytes]:
            """Exactly ``length`` bytes of the body, in chunks; _Cut when the peer leaves first."""
            left = length
            while left > 0:
                chunk = self.rfile.read(min(_CHUNK, left))
                if not chunk:
                    raise _Cut("the upload ended early (the container went away)")
                left -= len(chunk)
                yield chunk

        def _chunked(self) -> Iterator[bytes]:
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise _Cut("the upload ended early (the container went away)")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _Cut("the upload was not valid chunked encoding") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                yield from self._sized(size)
                self.rfile.readline(16)  # the CRLF after a chunk

    return Handler


class _Cut(Exception):
    """The upload stopped before its end (the peer left, or the exchange closed)."""


def _capped(chunks: Iterator[bytes], cap: int, closing: threading.Event) -> Iterator[bytes]:
    total = 0
    for chunk in chunks:
        if closing.is_set():
            raise _Cut("the run ended while its artifacts were uploading")
        total += len(chunk)
        if total > cap:
            raise UploadTooLarge
        yield chunk


# -- the container's side ------------------------------------------------------------------------

#: the bootstrap, run by ``python3 -c`` as root in the container: argv = collect_path, user, inner command...
BOOTSTRAP = r'''
import http.client, json, os, signal, subprocess, sys, tarfile, threading, time, urllib.parse
EXCHANGE, ENVFILE, INPUTS_FAILED, UPLOAD_FAILED = %(exchange)r, %(envfile)r, %(inputs)d, %(upload)d
class Refused(OSError):
    pass
def say(text):
    print("soopervisor: " + text, file=sys.stderr, flush=True)
def connect(url):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=600)
def fetch(url, token):
    last = None
    for attempt in range(8):
        try:
            conn = connect(url)
            conn.request("GET", "/inputs", headers={"Authorization": "Bearer " + token})
            r = conn.getresponse()
            if r.status != 200:
                raise Refused("the exchange answered %%d" %% r.status)
            with tarfile.open(fileobj=r, mode="r|", ignore_zeros=True) as tar:
                tar.extractall("/", numeric_owner=True)
            conn.close()
            return
        except Refused:
            raise
        except OSError as e:
            last = e
            time.sleep(min(0.25 * 2 ** attempt, 5))
    raise last
def chown(path, uid):
    for root, dirs, files in os.walk(path):
        os.lchown(root, uid, uid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, uid)
class Pipe:
    def __init__(self, fd):
        self.f = os.fdopen(fd, "wb")
    def write(self, data):
        return self.f.write(data)
    def close(self):
        self.f.close()
def upload(url, token, path):
    r, w = os.pipe()
    def produce():
        out = Pipe(w)
        try:
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                tar.add(path, arcname=os.path.basename(path.rstrip("/")))
        finally:
            out.close()
    t = threading.Thread(target=produce, daemon=True)
    t.start()
    source = os.fdopen(r, "rb")
    def body():
        while True:
            chunk = source.read(65536)
            if not chunk:
                return
            yield chunk
    conn = connect(url)
    conn.request("PUT", "/artifacts", body=body(), encode_chunked=True,
                 headers={"Authorization": "Bearer " + token, "Content-Type": "application/x-tar"})
    resp = conn.getresponse()
    resp.read()
    t.join()
    if resp.status != 200:
        raise OSError("the exchange answered %%d" %% resp.status)
def kill_user(uid):
    # what the pipeline left running (a daemon, a background job) could change the artifacts
    # while root reads them for the upload (a symlink swapped under tar): every process of the
    # pipeline's user is killed first, by a child that becomes that user (kill(-1) reaches them all)
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(uid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
            os._exit(0)
        os.waitpid(pid, 0)
def end(marker):
    if marker:
        sys.stderr.flush()
        print(marker, flush=True)
def main():
    collect, uid, marker, inner = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    try:
        with open(EXCHANGE) as f:
            url, token = f.read().split("\n")[:2]
        fetch(url, token)
    except Exception as e:
        say("could not fetch the run's inputs from the exchange: %%s" %% type(e).__name__ + (": %%s" %% e if isinstance(e, OSError) else ""))
        end(marker)
        return INPUTS_FAILED
    env = dict(os.environ)
    if os.path.exists(ENVFILE):
        with open(ENVFILE) as f:
            env.update(json.load(f))
    home = "/tmp/soopervisor-home"
    os.makedirs(home, exist_ok=True)
    os.makedirs(collect, exist_ok=True)
    for path in ("/workspace", "/soopervisor", home):
        if os.path.isdir(path):
            chown(path, uid)
    env.update(HOME=home, USER="pipeline", LOGNAME="pipeline")
    child = subprocess.Popen(["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups", "--"] + inner,
                             env=env, cwd=os.getcwd())
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _f: child.send_signal(s))
    code = child.wait()
    code = code if code >= 0 else 128 - code
    kill_user(uid)
    if os.path.isdir(collect):
        try:
            upload(url, token, collect)
        except Exception as e:
            say("could not upload the artifacts to the exchange: %%s" %% type(e).__name__ + (": %%s" %% e if isinstance(e, OSError) else ""))
            end(marker)
            return code or UPLOAD_FAILED
    end(marker)
    return code
sys.exit(main())
'''


def bootstrap_command(inner: list[str], *, collect_path: str, user: int = PIPELINE_USER,
                      end_marker: str = "") -> list[str]:
    """The container's command: fetch the inputs, run ``inner`` as ``user``, upload ``collect_path``.

    Runs as root (it reads the root-only exchange file, extracts at ``/``, chowns the
    workspace and drops to ``user`` with setpriv). Exits with ``inner``'s exit code;
    INPUTS_FAILED when the inputs could not be fetched, UPLOAD_FAILED when ``inner``
    succeeded but its artifacts could not be uploaded (each with a clear line in the log).
    ``end_marker``, when given, is its last line on stdout: a log follower that sees it
    knows it has every line (Swarm's service logs never end by themselves).
    """
    script = BOOTSTRAP % {"exchange": EXCHANGE_PATH, "envfile": ENV_PATH, "inputs": INPUTS_FAILED,
                          "upload": UPLOAD_FAILED}
    return ["python3", "-c", script, collect_path, str(int(user)), end_marker, *inner]
