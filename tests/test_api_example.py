"""The README's Python API example is a file the suite runs as written, and the README shows it
verbatim."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "api_example.py"


def test_readme_shows_the_example_file_verbatim():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    shown = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    assert shown == EXAMPLE.read_text()


def test_example_runs_as_written(tmp_path):
    # as a script, in a fresh interpreter: worker processes re-import it (the __main__ guard
    # matters)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path / "work")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first.startswith("400 adler32:") and first.endswith(" []")
    assert second == "[('tmb_0000178000_mrg_p000-p003.tmb', 'declared')]"
    assert (tmp_path / "work" / "catalog.db").is_file()
    assert not (tmp_path / "catalog.db").exists()
