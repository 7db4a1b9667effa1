"""``tmbmerge generate``: write a run of synthetic unmerged TMB files (with sidecars) to merge and
benchmark.

A thin layer over ``engine.generate.generate_run``: options in, one line per file as each is
finished and a summary out (``--quiet``: nothing; ``--json``: the list of files as JSON).
The engine is imported inside the run function so that ``tmbmerge --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
import time

from engine.units import human_bytes, plural

from ._common import add_json_flag, add_verbosity, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="write synthetic unmerged TMB files of one run, with their SAM sidecars",
        description="Write FILES unmerged TMB files of run RUN into OUTDIR (created if missing), "
        "named tmb_{run:010d}_p{partition:03d}.tmb, each with the <file>.json metadata its "
        "reconstruction job would have declared. The same --seed gives byte-identical files.",
    )
    p.add_argument("outdir", metavar="OUTDIR", help="folder for the files and their sidecars")
    p.add_argument("--run", type=int, default=178000, help="run number (default 178000)")
    p.add_argument(
        "--files", type=int, default=40, help="number of files (partitions) to write (default 40)"
    )
    p.add_argument(
        "--events-per-file",
        type=int,
        default=1000,
        metavar="E",
        help="events in each file (default 1000: a run of about 0.45 GB)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--first-partition",
        type=int,
        default=0,
        metavar="P",
        help="first partition number (default 0)",
    )
    p.add_argument(
        "--mean-event-kb",
        type=float,
        default=15.0,
        metavar="K",
        help="mean event size in kB, log-normal around it (default 15)",
    )
    p.add_argument(
        "--gap-every",
        type=int,
        default=0,
        metavar="G",
        help="skip one partition number after every G files (default 0: no gaps)",
    )
    p.add_argument(
        "--codec", choices=("zstd", "none"), default="zstd", help="block codec (default zstd)"
    )
    p.add_argument("--level", type=int, default=None, help="zstd level (default 3)")
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        metavar="J",
        help="files written at once, in worker processes (default: number of cores)",
    )
    p.add_argument("--force", action="store_true", help="replace existing files and sidecars")
    add_verbosity(p, "print nothing")
    add_json_flag(p)
    p.set_defaults(func=run_generate)


def run_generate(args) -> int:
    from engine.generate import generate_run

    show_lines = not (args.quiet or args.json)
    started = time.perf_counter()
    files = generate_run(
        args.outdir,
        run=args.run,
        files=args.files,
        events_per_file=args.events_per_file,
        seed=args.seed,
        first_partition=args.first_partition,
        mean_event_kb=args.mean_event_kb,
        gap_every=args.gap_every,
        codec=args.codec,
        level=args.level,
        jobs=args.jobs,
        overwrite=args.force,
        progress=_print_file if show_lines else None,
    )
    elapsed = time.perf_counter() - started
    if args.json:
        json.dump([f.to_dict() for f in files], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif not args.quiet:
        size = sum(f.size for f in files)
        events = sum(f.events for f in files)
        print(
            f"wrote {plural(len(files), 'file')}, {plural(events, 'event')}, {human_bytes(size)} "
            f"in {elapsed:.1f} s ({human_bytes(size / max(elapsed, 1e-9))}/s) to {args.outdir}"
        )
    return 0


def _print_file(f) -> None:
    print(
        f"{f.path.name}  {f.events:>7,} events  {f.first_event}-{f.last_event}  "
        f"{human_bytes(f.size):>10}  {f.checksum}",
        flush=True,
    )
