"""Issue 10's smaller findings: magic damage's exit code, a late SIGTERM.

- A damaged magic exited 4 when its first four bytes were hit and 5 otherwise.  Decided: a file
  whose header digest proves it a TMB header (the digest covers the magic) is a damaged TMB
  file, exit 5 wherever the magic is hit; a file no reader recognises is not a TMB file, exit 4.
- A SIGTERM landing once all work was done killed the process (-15) instead of letting it exit
  with its code.
(SAM's messages and timeouts are the catalogue's: see docs/CATALOG.md.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest


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
    code = (
        "import atexit, os, signal, sys\n"
        "from bindings.cli import main\n"
        "atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))\n"
        "sys.exit(main())\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    result = subprocess.run(
        [sys.executable, "-c", code, "verify", str(tmb_run[0])],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.returncode != -signal.SIGTERM
