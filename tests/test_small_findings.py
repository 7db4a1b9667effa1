"""Issue 10's smaller findings: magic damage's exit code, a late SIGTERM, SAM host errors.

- A damaged magic exited 4 when its first four bytes were hit and 5 otherwise.  Decided: a file
  whose header digest proves it a TMB header (the digest covers the magic) is a damaged TMB
  file, exit 5 wherever the magic is hit; a file no reader recognises is not a TMB file, exit 4.
- A SIGTERM landing once all work was done killed the process (-15) instead of letting it exit
  with its code.
- An unreachable SAM host's message was cut mid-word (200 characters of urllib3's text), a name
  that does not resolve was retried like weather, and the default timeouts let one hung request
  cost 248 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from engine.errors import CatalogUnavailable


@pytest.mark.parametrize("hit", [0, 3, 4, 7])
def test_damaged_magic_is_an_integrity_error_wherever_it_is_hit(cli, tmb_run, hit):
    path = tmb_run[0]
    data = bytearray(path.read_bytes())
    data[hit] ^= 0x20
    path.write_bytes(bytes(data))
    result = cli("verify", path)
    assert result.code == 5, result.err
    assert f"{path}: header, offset 0: damaged file magic" in result.err


def test_a_foreign_file_is_not_a_tmb_file(cli, tmp_path):
    path = tmp_path / "foreign.tmb"
    path.write_bytes(os.urandom(256))
    result = cli("verify", path)
    assert result.code == 4, result.err
    assert "not a TMB file (unknown magic bytes)" in result.err


def test_sigterm_after_the_work_is_done_keeps_the_exit_code(tmb_run):
    """The process sends itself SIGTERM from an exit hook, after the command returned."""
    code = ("import atexit, os, signal, sys\n"
            "from bindings.cli import main\n"
            "atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))\n"
            "sys.exit(main())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    result = subprocess.run([sys.executable, "-c", code, "verify", str(tmb_run[0])], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.returncode != -signal.SIGTERM


def test_unreachable_sam_host_message_is_whole_words():
    from bindings.catalog.samweb import SamWebCatalog

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    catalog = SamWebCatalog(f"http://127.0.0.1:{port}/sam/x/api", connect_timeout=2.0, read_timeout=2.0,
                            retries=1, backoff=0.0)
    with pytest.raises(CatalogUnavailable) as failed:
        catalog.get("anything")
    message = str(failed.value)
    assert message.endswith("Connection refused"), message
    assert "object at 0x" not in message


def test_a_host_name_that_does_not_resolve_is_not_retried(monkeypatch):
    from bindings.catalog import samweb

    calls = []

    def request(self, method, url, **kwargs):
        calls.append(url)
        raise samweb.requests.ConnectionError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(samweb.requests.Session, "request", request)
    catalog = samweb.SamWebCatalog("https://no-such-host.invalid/sam/x/api", retries=3, backoff=0.0)
    with pytest.raises(CatalogUnavailable, match="cannot reach https://no-such-host.invalid/sam/x/api: "
                                                 r"\[Errno -2\] Name or service not known"):
        catalog.get("anything")
    assert len(calls) == 1


def test_reasons_are_cut_at_a_word():
    from bindings.catalog.samweb import _reason

    text = _reason(Exception("word " * 100))
    assert text.endswith("word ...") and len(text) <= 204


def test_default_timeouts_bound_a_hung_request():
    """The defaults, not a measurement: a hung request costs at most (retries + 1) read timeouts
    plus the backoffs, which must stay near a minute (it was 4 x 60 + 7 = 247 s)."""
    from bindings.catalog import samweb

    backoffs = sum(min(samweb.DEFAULT_BACKOFF * 2 ** i, samweb.MAX_BACKOFF) for i in range(samweb.DEFAULT_RETRIES))
    worst = (samweb.DEFAULT_RETRIES + 1) * (samweb.DEFAULT_CONNECT_TIMEOUT + samweb.DEFAULT_READ_TIMEOUT) + backoffs
    assert worst <= 90, worst
