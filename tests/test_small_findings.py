"""Issue 10's smaller findings: magic damage's exit code, a late SIGTERM, SAM host errors.

- A damaged magic exited 4 when its first four bytes were hit and 5 otherwise.  Decided: a file
  whose header digest proves it a TMB header (the digest covers the magic) is a damaged TMB
  file, exit 5 wherever the magic is hit; a file no reader recognises is not a TMB file, exit 4.
- A SIGTERM landing once all work was done killed the process (-15) instead of letting it exit
  with its code.
- An unreachable SAM host's message was cut mid-word (200 characters of urllib3's text, object
  reprs included).  (How long a hung request may cost is the catalogue's deadline,
  ``TMBMERGE_CATALOG_DEADLINE``: see docs/CATALOG.md.)
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


def test_reasons_are_cut_at_a_word():
    from bindings.catalog.samweb import _reason

    text = _reason(Exception("word " * 100))
    assert text.endswith("word ...") and len(text) <= 204
