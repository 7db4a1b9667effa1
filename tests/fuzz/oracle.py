"""What must hold for every file the fuzzer makes, however hostile (issue 10's oracle).

``check_case(path, companion, workdir)`` runs one file (with its sidecar, if any) through every
reader of the engine: ``verify --deep`` with and without the sidecar, ``iter_events``,
``plan``'s description of an input, the catalogue hook's sidecar check, a deep merge of the file
alone and a deep ``--skip-bad`` merge of a sound companion and the file.  It returns what went
wrong, or None:

- an exception that is not an ``EngineError`` (a crash), from any of them;
- ``iter_events`` and ``verify --deep`` (without the sidecar) disagreeing on the file;
- a deep merge publishing an output that ``verify --deep`` refuses;
- a deep merge failing on integrity or format (exit 4/5) a file ``verify --deep`` accepts, or
  accepting a file ``verify --deep`` refuses (a merge may refuse more: duplicate events);
- a ``--skip-bad`` merge keeping a file ``verify --deep`` refuses as damaged.

Time and memory are the caller's to measure (``run``).
"""

from __future__ import annotations

import shutil
import traceback
from pathlib import Path

from engine.errors import ConsistencyError, EngineError, FormatError, IntegrityError
from engine.merge import MergeSpec, merge_files
from engine.readers import open_file
from engine.verify import verify_file

DEEP = MergeSpec(mode="deep", fsync=False, threads=2)
DEEP_SKIP_BAD = MergeSpec(mode="deep", fsync=False, threads=2, skip_bad=True)


class Crash(Exception):
    """A non-EngineError escaped: the oracle's first rule broken."""


def _call(what: str, fn, *args, **kwargs):
    """``fn(...)`` -> (result, EngineError or None); anything else is a ``Crash``."""
    try:
        return fn(*args, **kwargs), None
    except EngineError as exc:
        return None, exc
    except Exception as exc:  # noqa: BLE001 - this is what the fuzzer hunts
        lines = traceback.format_exception(exc)
        raise Crash(f"{what}: {type(exc).__name__}: {exc}\n{''.join(lines[-6:])}") from None


def _events(path: Path) -> int:
    with open_file(path) as reader:
        return sum(1 for _ in reader.iter_events())


def _damage(error) -> bool:
    return isinstance(error, (IntegrityError, FormatError))


def check_case(path: Path, companion: Path, workdir: Path) -> tuple[str | None, bool]:
    """(what broke the oracle or None, whether verify --deep refused the file)."""
    from engine.merge.plan import describe_input
    from engine.verify.checks import checked_sidecar

    checked, _ = _call("verify --deep", verify_file, path, deep=True, metadata="auto")
    alone, _ = _call("verify --deep --metadata none", verify_file, path, deep=True, metadata="none")
    if checked.error is not None and not isinstance(checked.error, EngineError):
        return f"verify reported a non-EngineError: {checked.error!r}", True
    _, events_error = _call("iter_events", _events, path)
    if (events_error is None) != alone.ok:
        return (
            f"iter_events ({events_error}) and verify --deep ({alone.error}) disagree",
            not checked.ok,
        )
    _call("plan", describe_input, path)
    _call("catalog hook", checked_sidecar, path)

    out = workdir / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    report, merge_error = _call("merge --mode deep", merge_files, [path], out / "alone.tmb", DEEP)
    if report is not None:
        published, _ = _call(
            "verify of the merged output", verify_file, out / "alone.tmb", deep=True
        )
        if not published.ok:
            return (
                f"a deep merge published an output verify --deep refuses: {published.error}",
                not checked.ok,
            )
        if not checked.ok:
            return (
                f"a deep merge accepted a file verify --deep refuses: {checked.error}",
                not checked.ok,
            )
    elif checked.ok and not isinstance(merge_error, ConsistencyError):
        return f"a deep merge refused ({merge_error}) a file verify --deep accepts", not checked.ok

    report, _ = _call(
        "merge --mode deep --skip-bad",
        merge_files,
        [companion, path],
        out / "skip.tmb",
        DEEP_SKIP_BAD,
    )
    if report is not None:
        published, _ = _call(
            "verify of the merged output", verify_file, out / "skip.tmb", deep=True
        )
        if not published.ok:
            return (
                f"a --skip-bad merge published an output verify --deep refuses: {published.error}",
                not checked.ok,
            )
        skipped = {str(entry.path) for entry in report.skipped}
        if _damage(alone.error) and str(path) not in skipped:
            return (
                f"a --skip-bad merge kept a file verify --deep refuses: {alone.error}",
                not checked.ok,
            )
    shutil.rmtree(out, ignore_errors=True)
    return None, not checked.ok
