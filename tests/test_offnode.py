"""The artifacts-off-the-node exchange (soopervisor/executors/offnode.py): real HTTP, a real container.

The exchange tests need no engine; the bootstrap runs in a real container of the main engine
with host networking, the way a Swarm task or a pod reaches the host's exchange.
"""
from __future__ import annotations

import http.client
import io
import socket
import struct
import tarfile
import threading
import time

import pytest

from soopervisor.executors.offnode import (
    ENV_PATH,
    EXCHANGE_PATH,
    INPUTS_FAILED,
    Exchange,
    bootstrap_command,
)


def tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, (data, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def request(ex: Exchange, method: str, path: str, token: str | None, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", ex.port, timeout=30)
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=h, encode_chunked=body is not None and not isinstance(body, bytes))
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, data


def test_inputs_need_the_token_and_are_the_concatenated_tars():
    a, b = tar({"workspace/a.txt": (b"A", 0o644)}), tar({"soopervisor/run.sh": (b"B", 0o755)})
    with Exchange([a, b], None) as ex:
        assert ex.url == f"http://127.0.0.1:{ex.port}"
        assert ex.secret_file() == f"{ex.url}\n{ex.token}\n".encode()
        assert len(ex.token) >= 40
        assert request(ex, "GET", "/inputs", None)[0] == 401
        assert request(ex, "GET", "/inputs", ex.token[:-1] + "x")[0] == 401
        assert request(ex, "GET", "/other", ex.token)[0] == 404
        assert ex.served == 0
        status, data = request(ex, "GET", "/inputs", ex.token)
        assert status == 200 and data == a + b
        with tarfile.open(fileobj=io.BytesIO(data), ignore_zeros=True) as t:
            assert t.getnames() == ["workspace/a.txt", "soopervisor/run.sh"]
        # no collect_to: nothing may be uploaded
        assert request(ex, "PUT", "/artifacts", ex.token, body=b"x")[0] == 404


def test_a_peer_that_hangs_up_prints_nothing(capsys):
    """A container killed mid-request resets its connection: the exchange goes on, and no
    traceback of socketserver's reaches the host's terminal."""
    with Exchange([tar({"a": (b"A", 0o644)})], lambda s: None) as ex:
        for _ in range(20):
            s = socket.create_connection(("127.0.0.1", ex.port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            s.sendall(f"GET /nowhere HTTP/1.1\r\nAuthorization: Bearer {ex.token}\r\n\r\n".encode())
            s.close()
        time.sleep(0.5)
        assert request(ex, "GET", "/inputs", ex.token)[0] == 200  # it still serves
    assert "Traceback" not in capsys.readouterr().err


def test_upload_is_streamed_capped_and_taken_once():
    seen: list[int] = []

    def collect(stream):
        for chunk in stream:
            seen.append(len(chunk))

    payload = tar({"artifacts/big.bin": (b"\0" * 300_000, 0o644)})
    with Exchange([], collect, advertise="10.1.2.3") as ex:
        assert ex.url.startswith("http://10.1.2.3:")
        # a wrong token: refused before anything of the body is read, and collect_to never called
        assert request(ex, "PUT", "/artifacts", "bad", body=payload)[0] == 401
        assert not seen and not ex.collected
        status, _ = request(ex, "PUT", "/artifacts", ex.token, body=iter([payload[:1000], payload[1000:]]))
        assert status == 200 and ex.collected and ex.error is None
        assert sum(seen) == len(payload) and max(seen) <= 1 << 16  # chunks, not one buffer
        assert request(ex, "PUT", "/artifacts", ex.token, body=payload)[0] == 409

    with Exchange([], lambda s: [None for _ in s], max_upload=1000) as ex:
        assert request(ex, "PUT", "/artifacts", ex.token, body=b"x" * 2000)[0] == 413
        assert request(ex, "PUT", "/artifacts", ex.token, body=iter([b"x" * 800, b"x" * 800]))[0] == 413
        assert not ex.collected and "exceed" in ex.error


def test_a_failing_store_is_reported_not_raised():
    def collect(stream):
        next(iter(stream))
        raise OSError("No space left on device")

    with Exchange([], collect) as ex:
        status, _ = request(ex, "PUT", "/artifacts", ex.token, body=b"y" * 10)
        assert status == 500 and not ex.collected
        assert "No space left" in ex.error and ex.token not in ex.error


SCRIPT = b"""set -u
id -u > /soopervisor/artifacts/uid
cat /run/secrets/soopervisor-exchange > /soopervisor/artifacts/token 2>/dev/null; echo "read=$?" > /soopervisor/artifacts/read
echo "$MY_SECRET" > /soopervisor/artifacts/secret
echo "$HOME" > /soopervisor/artifacts/home
cp /workspace/hello.txt /soopervisor/artifacts/
echo PIPELINE OUTPUT
exit 3
"""


def _container(client, image: str, ex: Exchange, extra: dict[str, tuple[bytes, int]] | None = None):
    c = client.containers.create(
        image, bootstrap_command(["bash", "/soopervisor/run.sh"], collect_path="/soopervisor/artifacts"),
        network_mode="host", working_dir="/workspace", labels={"soopervisor.test": "offnode"},
        cap_drop=["ALL"], cap_add=["CHOWN", "SETUID", "SETGID", "DAC_OVERRIDE", "FOWNER"],
        security_opt=["no-new-privileges"])
    c.put_archive("/", tar({EXCHANGE_PATH.lstrip("/"): (ex.secret_file(), 0o400), **(extra or {})}))
    return c


def test_bootstrap_runs_the_pipeline_as_a_user_who_cannot_read_the_token(docker_client, base_image):
    got: list[bytes] = []
    archives = [tar({"workspace/hello.txt": (b"hi\n", 0o644)}), tar({"soopervisor/run.sh": (SCRIPT, 0o755)})]
    with Exchange(archives, lambda s: got.append(b"".join(s))) as ex:
        c = _container(docker_client, base_image, ex, {ENV_PATH.lstrip("/"): (b'{"MY_SECRET": "s3cr3t"}', 0o400)})
        try:
            c.start()
            assert c.wait(timeout=120)["StatusCode"] == 3  # the pipeline's own code
            logs = c.logs().decode()
        finally:
            c.remove(force=True)
        assert ex.collected, logs
    assert "PIPELINE OUTPUT" in logs and ex.token not in logs
    with tarfile.open(fileobj=io.BytesIO(got[0])) as t:
        files = {m.name: t.extractfile(m).read().decode() for m in t.getmembers() if m.isfile()}
    assert files["artifacts/uid"].strip() == "1000"
    assert files["artifacts/read"].strip() == "read=1" and files["artifacts/token"] == ""
    assert files["artifacts/secret"].strip() == "s3cr3t"
    assert files["artifacts/home"].strip() == "/tmp/soopervisor-home"
    assert files["artifacts/hello.txt"] == "hi\n"


def test_bootstrap_with_a_wrong_token_fails_clearly(docker_client, base_image):
    with Exchange([tar({"soopervisor/run.sh": (b"echo SHOULD NOT RUN", 0o755)})], lambda s: None) as ex:
        c = _container(docker_client, base_image, ex)
        c.put_archive("/", tar({EXCHANGE_PATH.lstrip("/"): (f"{ex.url}\nwrong-token\n".encode(), 0o400)}))
        started = time.monotonic()
        try:
            c.start()
            code = c.wait(timeout=120)["StatusCode"]
            logs = c.logs().decode()
        finally:
            c.remove(force=True)
        assert code == INPUTS_FAILED, logs
        assert "could not fetch the run's inputs" in logs and "401" in logs
        assert "SHOULD NOT RUN" not in logs and "wrong-token" not in logs and ex.served == 0
        assert time.monotonic() - started < 20  # a refusal is not retried


def test_what_the_pipeline_left_running_is_killed_before_the_upload(docker_client, base_image):
    """A process of the pipeline's user alive during the upload could swap a file for a symlink under
    root's tar (to the token, say): every one is killed before root reads the artifacts."""
    uploading, release = threading.Event(), threading.Event()

    def collect(stream) -> None:
        uploading.set()
        release.wait(60)  # the upload holds here while the test looks at the container's processes
        b"".join(stream)

    script = b"sleep 1000 &\necho LEFT RUNNING\n"
    with Exchange([tar({"soopervisor/run.sh": (script, 0o755)})], collect) as ex:
        c = _container(docker_client, base_image, ex)
        try:
            c.start()
            assert uploading.wait(120), c.logs().decode()
            processes = [" ".join(row) for row in c.top()["Processes"]]
            release.set()
            assert c.wait(timeout=120)["StatusCode"] == 0
        finally:
            release.set()
            c.remove(force=True)
    assert ex.collected
    assert not [p for p in processes if "sleep 1000" in p], processes


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
