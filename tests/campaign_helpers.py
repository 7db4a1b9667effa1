"""A small campaign for the ``tmbmerge serve`` tests: catalogue, real merge-runs, certification, a
server.

``build_campaign(folder)`` makes, in ``folder``:

- run 178000 (``GOOD_RUN``): raw files declared in the catalogue with their event counts
  (partition 1's raw file says one event more than its unmerged file holds: produced !=
  expected; partition 6's raw file has no unmerged file: a missing partition), 6 unmerged
  files imported, merged by a real ``merge-run --declare`` into ``merged-good/`` (several
  outputs), and certified (``tmbmerge certify``);
- run 178002 (``REFERENCE_RUN``): 4 unmerged files, merged and certified, the reference;
- run 178004 (``DAMAGED_RUN``): 4 unmerged files, one damaged after import, so its
  ``merge-run`` into ``merged-damaged/`` fails; the good copy is kept in ``spare/``.

``CampaignServer`` runs ``tmbmerge serve --port 0`` as a real process on 127.0.0.1 and tells
its URL; ``cli_subprocess`` runs any tmbmerge command from this worktree's code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from conftest import generate_tmb_run

REPO = Path(__file__).resolve().parent.parent
GOOD_RUN, REFERENCE_RUN, DAMAGED_RUN = 178000, 178002, 178004
RAW_EVENT_SURPLUS_PARTITION = 1  # its raw file claims one event more than was produced
MISSING_PARTITION = 6  # a raw file never reconstructed


def cli_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.pop("TMBMERGE_CATALOG", None)
    return env


def cli_subprocess(*args, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "bindings.cli", *map(str, args)],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"tmbmerge {' '.join(map(str, args))} exited {done.returncode}: {done.stderr}"
        )
    return done


@dataclass
class Campaign:
    folder: Path
    catalog: str
    journals: list[Path]
    unmerged: dict[int, Path]
    merged: dict[int, Path]
    damaged_file: Path
    spare_copy: Path


def damage(path: Path) -> None:
    """Flip a byte in the middle of the file: a block's data."""
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def declare_raw_files(catalog_url: str, run: int, events: dict[int, int]) -> None:
    from bindings.catalog import open_catalog
    from engine.generate import raw_parent_name

    with open_catalog(catalog_url) as catalog:
        for partition, count in events.items():
            catalog.declare(
                {
                    "file_name": raw_parent_name(run, partition),
                    "file_size": 1000 + partition,
                    "event_count": count,
                    "runs": [[run, 0, "physics"]],
                    "data_tier": "raw",
                }
            )


def build_campaign(folder: Path) -> Campaign:
    folder.mkdir(parents=True, exist_ok=True)
    catalog = f"sqlite:///{folder / 'campaign.db'}"
    unmerged = {run: folder / f"unmerged-{run}" for run in (GOOD_RUN, REFERENCE_RUN, DAMAGED_RUN)}
    generated = generate_tmb_run(unmerged[GOOD_RUN], run=GOOD_RUN, partitions=range(6))
    generate_tmb_run(unmerged[REFERENCE_RUN], run=REFERENCE_RUN, partitions=range(4), seed=5)
    generate_tmb_run(unmerged[DAMAGED_RUN], run=DAMAGED_RUN, partitions=range(4), seed=9)
    raw = {g.partition: g.events for g in generated}
    raw[RAW_EVENT_SURPLUS_PARTITION] += 1
    raw[MISSING_PARTITION] = 40
    declare_raw_files(catalog, GOOD_RUN, raw)
    for path in unmerged.values():
        cli_subprocess("catalog", "import", path, "--catalog", catalog, "--declare-parents")
    merged = {
        GOOD_RUN: folder / "merged-good",
        REFERENCE_RUN: folder / "merged-reference",
        DAMAGED_RUN: folder / "merged-damaged",
    }
    total = sum(p.stat().st_size for p in unmerged[GOOD_RUN].glob("*.tmb"))
    cli_subprocess(
        "merge-run",
        unmerged[GOOD_RUN],
        "--out-dir",
        merged[GOOD_RUN],
        "--catalog",
        catalog,
        "--declare",
        "--quiet",
        "--target-size",
        str(total // 2 + 1),
    )
    cli_subprocess(
        "merge-run",
        unmerged[REFERENCE_RUN],
        "--out-dir",
        merged[REFERENCE_RUN],
        "--catalog",
        catalog,
        "--declare",
        "--quiet",
    )
    damaged = sorted(unmerged[DAMAGED_RUN].glob("*.tmb"))[2]
    spare = folder / "spare" / damaged.name
    spare.parent.mkdir()
    shutil.copy2(damaged, spare)
    damage(damaged)
    failed = cli_subprocess(
        "merge-run",
        unmerged[DAMAGED_RUN],
        "--out-dir",
        merged[DAMAGED_RUN],
        "--catalog",
        catalog,
        "--declare",
        "--quiet",
        check=False,
    )
    assert failed.returncode != 0, "the damaged run was expected to fail"
    cli_subprocess(
        "certify",
        unmerged[GOOD_RUN],
        merged[GOOD_RUN],
        unmerged[REFERENCE_RUN],
        merged[REFERENCE_RUN],
        "--catalog",
        catalog,
    )
    return Campaign(folder, catalog, list(merged.values()), unmerged, merged, damaged, spare)


class CampaignServer:
    """``tmbmerge serve`` as a real process on 127.0.0.1 (any free port)."""

    def __init__(self, catalog: str, journals, *, log: Path):
        self.log = open(log, "w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bindings.cli",
                "serve",
                "--catalog",
                catalog,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--journals",
                *map(str, journals),
            ],
            cwd=REPO,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        line = self.process.stdout.readline()
        if not line.startswith("serving "):
            self.stop()
            raise AssertionError(f"tmbmerge serve did not start: {line!r}; see {log}")
        self.url = line.split(" on ")[1].strip().rstrip("/")
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(self.url + "/api/datasets", timeout=5)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise AssertionError(f"tmbmerge serve is not answering; see {log}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        self.log.close()
