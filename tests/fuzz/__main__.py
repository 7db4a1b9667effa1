"""``python -m tests.fuzz [--seconds 600] [--seed N] [--json]``: the long fuzzing run, on demand.

Prints a progress line every 500 files and a summary at the end (files, crashes, slowest file,
peak RSS); crashers are kept under ``tests/data/fuzz/`` (``--crash-dir``).  Exit code 1 when
anything broke the oracle.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .run import CRASH_DIR, fuzz


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--seconds", type=float, default=600.0, help="how long to fuzz (default 600)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="base seed: file N of seed S is reproducible"
    )
    parser.add_argument("--crash-dir", type=Path, default=CRASH_DIR, help="where crashers are kept")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    summary = fuzz(
        seconds=args.seconds,
        seed=args.seed,
        crash_dir=args.crash_dir,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(json.dumps(summary.to_dict(), indent=2) if args.json else summary.line())
    for crash in summary.crashes:
        print(f"  {crash['case']}: {crash['problem'].splitlines()[0]}")
    return 1 if summary.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
