"""Shared by the on-demand benchmark suites in bench/: where their data lives, generated runs,
ratios.

The suites run only when asked (``python -m pytest bench/ --benchmark-only -p no:cacheprovider``;
the default test run collects ``tests/`` only).  Everything here is generic, for any suite:

- ``--bench-dir DIR``: put generated data in a new folder under DIR (default: pytest's temporary
  folder, i.e. under ``--basetemp`` or /tmp).  The folder is removed when the session ends.
- ``bench_dir`` (session): that folder.
- ``bench_run(size, files)`` (session): a synthetic run (``engine.benchmark.dataset.make_run``)
  of about ``size`` bytes in ``files`` files, generated once per session and shared.
- ``bench_scratch``: an empty folder for one test's outputs, removed afterwards.
- ``bench_ratios``: ``bench_ratios.add(test, name, value, target=None, met=None)``; every ratio
  added is listed at the end of the session and, with ``--bench-ratios-json FILE``, saved there.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

_BOOK = pytest.StashKey[list]()


def pytest_addoption(parser):
    group = parser.getgroup("tmbmerge benchmarks")
    group.addoption(
        "--bench-dir",
        default=None,
        help="folder under which benchmark data is generated (default: pytest's temporary folder)",
    )
    group.addoption(
        "--bench-ratios-json",
        default=None,
        help="also write every recorded ratio to this JSON file",
    )


def pytest_configure(config):
    config.stash[_BOOK] = []


@pytest.fixture(scope="session")
def bench_dir(request, tmp_path_factory):
    base = request.config.getoption("--bench-dir")
    path = (
        Path(tempfile.mkdtemp(prefix="tmbmerge-bench-", dir=base))
        if base
        else tmp_path_factory.mktemp("bench")
    )
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def bench_run(bench_dir):
    from engine.benchmark.dataset import make_run

    made = {}

    def make(size: int, files: int):
        key = (int(size), int(files))
        if key not in made:
            made[key] = make_run(bench_dir / f"run-{key[0]}-{key[1]}", size=key[0], files=key[1])
        return made[key]

    return make


@pytest.fixture
def bench_scratch(bench_dir, request):
    path = Path(tempfile.mkdtemp(prefix=f"{request.node.name[:40]}-", dir=bench_dir))
    yield path
    shutil.rmtree(path, ignore_errors=True)


class _RatioBook:
    def __init__(self, records: list):
        self.records = records

    def add(
        self,
        test: str,
        name: str,
        value: float,
        *,
        target: str | None = None,
        met: bool | None = None,
        **details,
    ) -> None:
        self.records.append(
            {"test": test, "name": name, "value": value, "target": target, "met": met, **details}
        )


@pytest.fixture
def bench_ratios(request):
    return _RatioBook(request.config.stash[_BOOK])


def pytest_terminal_summary(terminalreporter, config):
    records = config.stash.get(_BOOK, [])
    if not records:
        return
    terminalreporter.section("benchmark ratios")
    for r in records:
        verdict = "" if r["met"] is None else ("  met" if r["met"] else "  MISSED")
        target = f"  (target {r['target']})" if r["target"] else ""
        best = f"  best rounds {r['best']:.3f}" if r.get("best") is not None else ""
        terminalreporter.write_line(
            f"{r['name']:<34} {r['value']:8.3f}{best}{target}{verdict}   [{r['test']}]"
        )
    path = config.getoption("--bench-ratios-json")
    if path:
        Path(path).write_text(json.dumps(records, indent=2) + "\n")
        terminalreporter.write_line(f"ratios written to {path}")
