"""Real storage servers for the remote-file tests: Debian's ``xrootd`` serving ``root://`` and,
through its HTTP plugin with a self-signed certificate, ``https://`` (WebDAV: PUT, MOVE,
PROPFIND, ``Want-Digest: adler32``), both on 127.0.0.1 with adler32 checksums enabled.

``XrootdServer()`` starts one (``stop()``/``kill()`` end it, ``remove()`` also clears its folder);
the session-scoped fixture
``xrootd_server`` is shared by the tests that only read and write, and the fault tests start
their own (a server to kill, one whose checksum program lies).  ``CuttingProxy`` forwards a
TCP port to a server and, after a given number of bytes in one direction, drops the
connection or kills the server: the bytes it passes are the real protocol's.

When the ``xrootd`` binary or the XRootD Python client is missing, the tests are skipped with
the reason, unless ``TMBMERGE_REQUIRE_SERVERS=1`` (set by ``.ci/run``), which makes it a failure.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

XROOTD = shutil.which("xrootd")
START_TIMEOUT = 20.0


def require_servers() -> None:
    """Skip (or, in CI, fail) when the servers or the client cannot run here."""
    missing = []
    if XROOTD is None:
        missing.append("the xrootd binary (apt-get install xrootd-server)")
    if shutil.which("openssl") is None:
        missing.append("openssl")
    try:
        import XRootD.client  # noqa: F401
    except ImportError:
        missing.append("the XRootD Python client (pip install 'tmbmerge[remote]')")
    if missing:
        reason = "remote-file tests need " + " and ".join(missing)
        if os.environ.get("TMBMERGE_REQUIRE_SERVERS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def make_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A self-signed certificate for 127.0.0.1 and a CA folder (hashed) that trusts it."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    ca_dir = folder / "ca"
    ca_dir.mkdir()
    shutil.copy(cert, ca_dir / "tmbmerge-test.pem")
    subprocess.run(["openssl", "rehash", str(ca_dir)], check=True, capture_output=True)
    return cert, key, ca_dir


class XrootdServer:
    """One xrootd process on 127.0.0.1: ``root_url`` and ``https_url`` name its exported folder
    ``data`` (a local folder the tests may fill directly)."""

    def __init__(self, *, checksum_program: str | None = None, name: str = "tmbtest"):
        # a folder of its own under the system's temporary directory: the server may run as
        # ``nobody``, which cannot enter pytest's private folders
        self.folder = Path(tempfile.mkdtemp(prefix=f"tmbmerge-{name}-"))
        os.chmod(self.folder, 0o755)
        self.data = self.folder / "data"
        self.data.mkdir(exist_ok=True)
        self.cert, self.key, self.ca_dir = make_certificate(self.folder)
        self.root_port, self.https_port = free_port(), free_port()
        self.name = name
        config = [
            f"xrd.port {self.root_port}",
            "xrd.network nodnr",
            "all.export /",
            f"oss.localroot {self.data}",
            "xrootd.chksum adler32" + (f" {checksum_program}" if checksum_program else ""),
            f"xrd.tls {self.cert} {self.key}",
            f"xrd.tlsca certfile {self.cert}",
            f"xrd.protocol XrdHttp:{self.https_port} libXrdHttp.so",
        ]
        (self.folder / "xrootd.cfg").write_text("\n".join(config) + "\n")
        self.as_user = []
        if os.geteuid() == 0:  # xrootd refuses to run as root
            nobody = pwd.getpwnam("nobody")
            for path in [self.folder, *self.folder.rglob("*")]:
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
            self.as_user = ["-R", "nobody"]
        self.process = None
        self.start()

    @property
    def root_url(self) -> str:
        return f"root://127.0.0.1:{self.root_port}/"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def start(self) -> None:
        log = open(self.folder / "xrootd.out", "ab")
        self.process = subprocess.Popen(
            [
                XROOTD,
                "-c",
                str(self.folder / "xrootd.cfg"),
                "-n",
                self.name,
                "-l",
                str(self.folder / "xrootd.log"),
                "-a",
                str(self.folder),
                *self.as_user,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        if not (
            wait_for_port(self.root_port, deadline) and wait_for_port(self.https_port, deadline)
        ):
            self.stop()
            raise RuntimeError(f"xrootd did not start: {self.log_tail()}")

    def log_tail(self) -> str:
        logs = sorted(self.folder.rglob("xrootd.log")) + [self.folder / "xrootd.out"]
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in logs if p.exists())

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def remove(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def owned_by_server(self, path: Path) -> Path:
        """Give ``path`` (under ``data``) to the server's user, so the server may write there."""
        if self.as_user:
            nobody = pwd.getpwnam("nobody")
            for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
                os.chown(p, nobody.pw_uid, nobody.pw_gid)
        return path

    def put(self, local: Path, folder: str = "") -> Path:
        """Copy ``local`` (and its sidecar) into ``data/folder`` on the server's disk."""
        target = self.data / folder
        target.mkdir(parents=True, exist_ok=True)
        for source in (local, local.with_name(local.name + ".json")):
            if source.exists():
                shutil.copy(source, target / source.name)
        self.owned_by_server(target)
        return target / local.name


class CuttingProxy:
    """Forward 127.0.0.1:``port`` to ``target_port``; once ``limit`` bytes have gone
    ``direction`` ("down": server to client, "up": client to server) on one connection, call
    ``action`` (default: drop the connection) and drop it."""

    def __init__(self, target_port: int, *, limit: int, direction: str, action=None):
        self.target_port, self.limit, self.direction, self.action = (
            target_port,
            limit,
            direction,
            action,
        )
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.cuts = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            state = {"passed": 0, "cut": False}
            for src, dst, direction in ((client, server, "up"), (server, client, "down")):
                threading.Thread(
                    target=self._pump,
                    args=(src, dst, direction, state, client, server),
                    daemon=True,
                ).start()

    def _pump(self, src, dst, direction, state, client, server) -> None:
        try:
            while not state["cut"]:
                data = src.recv(65536)
                if not data:
                    break
                if direction == self.direction:
                    state["passed"] += len(data)
                    if state["passed"] > self.limit:
                        state["cut"] = True
                        self.cuts += 1
                        if self.action is not None:
                            self.action()
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def url(self, path: str = "", scheme: str = "root") -> str:
        """The URL of ``path`` through the proxy (forwarding the server's root or https port)."""
        slashes = "//" if scheme == "root" else "/"
        return f"{scheme}://127.0.0.1:{self.port}{slashes}{path.lstrip('/')}"

    def close(self) -> None:
        self._closed = True
        self.listener.close()


@pytest.fixture(scope="session")
def xrootd_server():
    """One xrootd for the session, serving root:// and https:// on 127.0.0.1."""
    require_servers()
    server = XrootdServer()
    yield server
    server.remove()


@pytest.fixture
def remote_env(monkeypatch, xrootd_server):
    """Short timeouts and retries, and the test server's certificate trusted (X509_CERT_DIR)."""
    monkeypatch.setenv("TMBMERGE_REMOTE_TIMEOUT", "10")
    monkeypatch.setenv("TMBMERGE_REMOTE_RETRIES", "1")
    monkeypatch.setenv("TMBMERGE_REMOTE_BACKOFF", "0.1")
    monkeypatch.setenv("X509_CERT_DIR", str(xrootd_server.ca_dir))
    return xrootd_server
