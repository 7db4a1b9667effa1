"""Shared fixtures: small generated runs of TMB files (with sidecars), and helpers to inspect
results.

Generating files costs a JIT warm-up and some compression, so runs are generated once per
session into a template folder and copied into each test's ``tmp_path``; tests may then damage
their copy freely.  Files are small (a few hundred kB, several blocks each, so a damaged byte can
be placed in "block N" for N > 0) except ``tmb_big_run``, a ~25 MB run shared read-only by the
tests that need a merge to last long enough to be interrupted.

Fixtures:

- ``tmb_run_template`` (session): folder of the small run, never to be modified.
- ``tmb_run`` : the small run copied into ``tmp_path / "run"``; a list of its data files, in
  partition order (sidecars ``<file>.json`` beside them).
- ``tmb_file_factory``: ``make(path, run=..., partition=..., first_event=..., n_events=...)``
  writes one more small file (with sidecar) where a test wants it.
- ``tmb_big_run`` (session): folder of the big run (read-only by convention).
- ``cli``: ``cli("merge", ...)`` runs ``bindings.cli.main`` in-process and returns a
  ``CliResult`` (exit code, stdout, stderr, ``.json()``).

Helpers (plain functions, also offered as fixtures of the same name for tests that prefer
them): ``read_event_list(path)``, ``sha256_of(path)``, ``leftovers(folder)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from remote_servers import remote_env, xrootd_server  # noqa: F401  (remote-file fixtures)

SMALL_RUN = 178000
SMALL_PARTITIONS = tuple(range(6))
SMALL_EVENTS_PER_FILE = 40
SMALL_MEAN_EVENT_KB = 5.0
SMALL_BLOCK_BYTES = 64 << 10  # ~4 blocks per small file
SMALL_SEED = 11

BIG_RUN = 178100
BIG_FILES = 12
BIG_EVENTS_PER_FILE = 170  # ~2 MB per file at the default 15 kB events: ~25 MB in all
BIG_SEED = 7


def generate_tmb_run(
    outdir,
    *,
    run: int = SMALL_RUN,
    partitions=SMALL_PARTITIONS,
    events_per_file: int = SMALL_EVENTS_PER_FILE,
    seed: int = SMALL_SEED,
    mean_event_kb: float = SMALL_MEAN_EVENT_KB,
    block_bytes: int = SMALL_BLOCK_BYTES,
):
    """Like ``engine.generate.generate_run`` (same event numbering across partitions), but with a
    chosen block size and no fsync.  Returns the ``GeneratedFile``s in partition order."""
    from engine.generate import file_name, first_events, generate_file

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    partitions = list(partitions)
    firsts = first_events(seed, run, partitions, events_per_file)
    return [
        generate_file(
            outdir / file_name(run, p),
            run=run,
            partition=p,
            first_event=firsts[p],
            n_events=events_per_file,
            seed=seed,
            mean_event_kb=mean_event_kb,
            block_bytes=block_bytes,
            fsync=False,
        )
        for p in partitions
    ]


def read_event_list(path) -> list[tuple[int, int, bytes]]:
    """(run, event, payload bytes) of every event of a file, decoded and checked by the reader."""
    from engine import open_file

    with open_file(path) as reader:
        return [(e.run, e.event, bytes(e.payload)) for e in reader.iter_events()]


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def leftovers(folder) -> list[str]:
    """Names in ``folder`` that a finished or failed merge must not leave behind: temporary
    outputs and staged sidecars (``.<name>.tmbpart-*``), lock files (``.<name>.lock``) and
    temporary sidecars (``.<name>.json.*.tmp``)."""
    return sorted(
        name
        for name in os.listdir(folder)
        if ".tmbpart-" in name
        or name.endswith(".lock")
        or (name.startswith(".") and name.endswith(".tmp"))
    )


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture(scope="session")
def tmb_run_template(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tmb-run-template")
    generate_tmb_run(folder)
    return folder


@pytest.fixture
def tmb_run(tmb_run_template, tmp_path) -> list[Path]:
    folder = tmp_path / "run"
    shutil.copytree(tmb_run_template, folder)
    return sorted(folder.glob("*.tmb"))


@pytest.fixture
def tmb_file_factory():
    from engine.generate import generate_file

    def make(
        path,
        *,
        run: int = SMALL_RUN,
        partition: int,
        first_event: int,
        n_events: int = SMALL_EVENTS_PER_FILE,
        seed: int = SMALL_SEED,
        sidecar: bool = True,
        mean_event_kb: float = SMALL_MEAN_EVENT_KB,
        block_bytes: int = SMALL_BLOCK_BYTES,
        **kwargs,
    ):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return generate_file(
            path,
            run=run,
            partition=partition,
            first_event=first_event,
            n_events=n_events,
            seed=seed,
            sidecar=sidecar,
            mean_event_kb=mean_event_kb,
            block_bytes=block_bytes,
            fsync=False,
            **kwargs,
        )

    return make


@pytest.fixture(scope="session")
def tmb_big_run(tmp_path_factory) -> Path:
    from engine.generate import generate_run

    folder = tmp_path_factory.mktemp("tmb-big-run")
    generate_run(
        folder,
        run=BIG_RUN,
        files=BIG_FILES,
        events_per_file=BIG_EVENTS_PER_FILE,
        seed=BIG_SEED,
        jobs=2,
        fsync=False,
    )
    return folder


@pytest.fixture
def out_dir(tmp_path):
    """An empty folder for a merge's output."""
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture
def cli(capsys):
    from bindings.cli import main

    def run(*args) -> CliResult:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse refusing the command line
            code = exc.code if isinstance(exc.code, int) else 2
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(name="read_event_list")
def _read_event_list_fixture():
    return read_event_list


@pytest.fixture(name="sha256_of")
def _sha256_fixture():
    return sha256_of


@pytest.fixture(name="leftovers")
def _leftovers_fixture():
    return leftovers


@pytest.fixture(scope="session")
def campaign(tmp_path_factory):
    """The campaign of ``campaign_helpers.build_campaign`` (real merge-runs, certified), shared by
    the ``tmbmerge serve`` tests; tests that change datasets make their own."""
    from campaign_helpers import build_campaign

    return build_campaign(tmp_path_factory.mktemp("campaign"))


@pytest.fixture(scope="session")
def campaign_server(campaign):
    """``tmbmerge serve`` on ``campaign``, a real process on 127.0.0.1."""
    from campaign_helpers import CampaignServer

    running = CampaignServer(campaign.catalog, campaign.journals, log=campaign.folder / "serve.log")
    yield running
    running.stop()
