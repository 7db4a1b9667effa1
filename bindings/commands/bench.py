"""``tmbmerge bench`` and ``tmbmerge spec``: measure this machine, then size a campaign from it.

``bench`` runs ``engine.benchmark.runner.run_bench`` (every figure against its baseline, each in
a fresh process) with a live display of the step it is on, and writes bench.json, bench.md
and bench.png.  ``spec`` reads a bench.json (or measures one now, quickly) and prints the
hardware a campaign needs (``engine.benchmark.sizing``), every number with its source.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from ._common import add_json_flag, add_verbosity, positive_int

SPEC_BENCH_SIZE = "256MiB"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure storage, checksums, codecs and every merge mode on this machine",
        description="Generate a run under --dir and measure, in one go and each against its "
        "baseline: sequential write and (cold) read, the plain copy of the run (the baseline), "
        "xxh3/adler32/zstd per core, zstd on all cores, fast/safe/deep merges with 1 job and "
        "with all cores, and the decode+re-encode (copyd0om) way. Writes bench.json, bench.md "
        "and bench.png to --out; the generated data is removed afterwards.",
    )
    p.add_argument(
        "--size", default=None, help="size of the generated run (default 2GiB; 64MiB with --quick)"
    )
    p.add_argument(
        "--dir",
        default=tempfile.gettempdir(),
        help="where data is generated and storage is measured: the disk merges will use "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--out",
        default="bench-report",
        help="folder for bench.json, bench.md, bench.png (default: %(default)s)",
    )
    p.add_argument(
        "--quick", action="store_true", help="small run, one round: a fast smoke measurement"
    )
    p.add_argument(
        "--rounds", type=int, default=None, help="rounds of measurements, median taken (default 3)"
    )
    p.add_argument(
        "--files",
        type=int,
        default=None,
        help="input files in the run (default: one per 32 MiB, 4-40)",
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        help="processes for the all-core figures (default: all cores)",
    )
    add_verbosity(p, "no progress display, no summary")
    add_json_flag(p)
    p.set_defaults(func=run_bench_command)

    p = subparsers.add_parser(
        "spec",
        help="size the merge hardware for a campaign from a bench report",
        description="From a bench report (measured now with a quick bench if --bench is not "
        "given): the input rate a campaign needs, per-server merge throughput in the mode and "
        "its bottleneck (merge, disk or link), servers at the given utilisation, cores, memory, "
        "disk bandwidth, buffer space and network per server. Every number names the measurement "
        "or option it came from.",
    )
    p.add_argument(
        "--volume", required=True, help="campaign input volume, e.g. 40TB (decimal) or 36TiB"
    )
    p.add_argument("--days", type=float, required=True, help="days the campaign has")
    p.add_argument(
        "--mode", choices=("fast", "safe", "deep"), default="safe", help="merge mode (default safe)"
    )
    p.add_argument(
        "--bench", default=None, help="bench.json to use (default: run a quick bench now)"
    )
    p.add_argument(
        "--link",
        default="10Gb",
        help="network link per server and direction: 1Gb, 10Gb/s, 25Gbps, "
        "500MB/s (default: %(default)s)",
    )
    p.add_argument(
        "--wait-hours",
        type=float,
        default=24.0,
        help="longest wait of an unmerged file for its run to complete (default 24, as CMS)",
    )
    p.add_argument(
        "--utilisation",
        type=float,
        default=0.7,
        help="plan servers to run at most at this share of their measured rate (default 0.7)",
    )
    p.add_argument(
        "--os-memory", default="2GiB", help="memory per server kept for the OS (default 2GiB)"
    )
    p.add_argument(
        "--dir", default=tempfile.gettempdir(), help="where the quick bench runs, without --bench"
    )
    p.add_argument(
        "--out",
        default=None,
        help="write the markdown report here (and, with a quick bench, its bench.json beside it)",
    )
    add_verbosity(p, "no progress display")
    add_json_flag(p)
    p.set_defaults(func=run_spec_command)


class _Display:
    """The live line of ``bench``: which measurement runs, how many are done, elapsed time."""

    def __init__(self, quiet: bool):
        self._progress = None
        self._task = None
        if quiet or not sys.stderr.isatty():
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )

    def __call__(self, label: str, done: int, total: int) -> None:
        if self._progress is None:
            return
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task(label, total=total)
        self._progress.update(self._task, description=label, completed=done, total=total)

    def close(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.stop()


def _measure(settings, quiet: bool, command: str) -> dict:
    from engine.benchmark.runner import run_bench

    display = _Display(quiet)
    try:
        return run_bench(settings, progress=display, command=command)
    finally:
        display.close()


def _settings(args, size: str | None, quick: bool):
    from engine.benchmark.runner import QUICK_SIZE, BenchSettings
    from engine.errors import UsageError
    from engine.units import parse_size

    directory = Path(args.dir)
    if not directory.is_dir():
        raise UsageError("--dir is not an existing folder", path=directory)
    for name in ("rounds", "files", "jobs"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be at least 1")
    default = QUICK_SIZE if quick else BenchSettings.size
    return BenchSettings(
        size=parse_size(size) if size else default,
        directory=str(directory),
        files=getattr(args, "files", None),
        rounds=getattr(args, "rounds", None),
        quick=quick,
        jobs=getattr(args, "jobs", None),
    )


def _bench_command_line(args) -> str:
    """The command as it could be typed again (rebuilt from the options, which ``main(argv)`` may
    not show)."""
    parts = ["tmbmerge bench"]
    if args.size:
        parts.append(f"--size {args.size}")
    if args.quick:
        parts.append("--quick")
    for name in ("rounds", "files", "jobs"):
        if getattr(args, name) is not None:
            parts.append(f"--{name} {getattr(args, name)}")
    parts.append(f"--dir {args.dir} --out {args.out}")
    return " ".join(parts)


def run_bench_command(args) -> int:
    from engine.benchmark.report import write_report

    settings = _settings(args, args.size, args.quick)
    report = _measure(settings, args.quiet or args.json, _bench_command_line(args))
    paths = write_report(report, args.out)
    if args.json:  # the report bench.json holds, and where the files went
        json.dump(
            {**report, "written": {kind: str(path) for kind, path in paths.items()}},
            sys.stdout,
            indent=2,
        )
        print()
    elif not args.quiet:
        _print_summary(report, paths)
    return 0


def _print_summary(report: dict, paths: dict) -> None:
    figures = report["figures"]
    print(
        f"{report['data']['bytes'] / 1e9:.2f} GB run, {report['settings']['rounds']} round(s), "
        f"{report['elapsed_seconds']} s"
    )
    copy = figures.get("storage.copy")
    if copy:
        print(f"  plain copy (the baseline): {copy['value'] / 1e6:,.0f} MB/s")
    for name, ratio in report["ratios"].items():
        if ratio["target"] is None or ratio["value"] is None:
            continue
        mark = "ok" if ratio["met"] else "MISSED"
        print(f"  {name}: {ratio['value']:.2f}x (target {ratio['target']}) {mark}")
    if report["data"]["bytes"] < 256 * 10**6:
        print(
            "  (a run this small is dominated by fixed costs: quote figures from --size 512MiB "
            "or more)"
        )
    for kind, path in paths.items():
        print(f"  {kind}: {path}")


def run_spec_command(args) -> int:
    from engine.benchmark.report import load_report
    from engine.benchmark.sizing import Campaign, size_campaign_range
    from engine.benchmark.sizing_report import render_markdown, render_table
    from engine.units import parse_rate, parse_size

    campaign = Campaign(
        volume_bytes=parse_size(args.volume),
        days=args.days,
        mode=args.mode,
        link_rate=parse_rate(args.link),
        wait_hours=args.wait_hours,
        max_utilisation=args.utilisation,
        os_memory_bytes=parse_size(args.os_memory),
    )
    if args.bench:
        report = load_report(args.bench)
        source = f"bench.json `{args.bench}`"
    else:
        settings = _settings(args, SPEC_BENCH_SIZE, True)
        report = _measure(
            settings,
            args.quiet or args.json,
            f"tmbmerge bench --quick --size {SPEC_BENCH_SIZE} --dir {args.dir} (run by spec)",
        )
        source = "a quick bench measured now"
        if args.out:
            saved = Path(args.out).with_suffix(".bench.json")
            saved.write_text(json.dumps(report, indent=2) + "\n")
            source += f", saved as `{saved}`"
    sizing = size_campaign_range(campaign, report, args.mode)
    if args.out:
        Path(args.out).write_text(render_markdown(sizing, report, bench_source=source))
    if args.json:
        json.dump({**sizing.to_dict(), "bench_source": source}, sys.stdout, indent=2)
        print()
    else:
        print(render_table(sizing), end="")
        if args.out:
            print(f"report: {args.out}")
    return 0
