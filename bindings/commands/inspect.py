"""``tmbmerge dump`` and ``tmbmerge verify``: look inside one file, prove many files sound.

Both run functions import the engine only when they run, so ``tmbmerge --help`` loads no numpy;
``verify`` without ``--deep`` never loads numba either (only decoding events needs it).

``verify`` reports every file (it never stops at the first bad one) and exits with the code of
the worst failure, ranked by ``engine.errors.most_severe_exit_code``: damaged bytes first, then
disagreement with a record (sidecar, catalogue), then files that are not TMB at all, then
unreadable paths.
"""

from __future__ import annotations

import argparse
import json
import sys

from engine.errors import EXIT_OK, most_severe_exit_code
from engine.units import plural

from ._common import add_verbosity, positive_int, print_error

VERIFY_EPILOG = """\
Exit status: 0 when every file passes; otherwise the code of the most serious failure among
the files, in this order of precedence: 5 (integrity: damaged, truncated or mis-framed bytes),
then 6 (consistency: the file disagrees with its sidecar <file>.json or its own name), then 4
(format: not a TMB file, unsupported version, bad metadata), then 3 (input: missing or
unreadable path).  So one corrupt file among many missing ones still exits 5.

Fast mode checks every byte of every file against its xxh3 digests without decompressing;
--deep also decompresses every block, walks its event records and checks every event's digest
against the index.
"""


def register(subparsers) -> None:
    dump = subparsers.add_parser(
        "dump",
        help="show a TMB file's header, metadata, block table and totals",
        description="Show a TMB file's header, metadata, block table, totals (with the whole "
        "file's adler32) and, with --events, every event as listed in its index. Block bytes are "
        "not checked: use `tmbmerge verify` for that.",
    )
    dump.add_argument("file", metavar="FILE", help="the TMB file")
    dump.add_argument(
        "--events",
        action="store_true",
        help="also list every event: run, event, size, payload digest, block",
    )
    dump.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_verbosity(dump, None)
    dump.set_defaults(func=run_dump)

    verify = subparsers.add_parser(
        "verify",
        help="check TMB files: structure, digests, sidecars",
        description="Verify TMB files: header, metadata, index and trailer, every block's "
        "digests and\nthe whole file's adler32; with sidecars (<file>.json) the size, adler32, "
        "event count\nand name.",
        epilog=VERIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("files", metavar="FILE", nargs="+", help="TMB files to verify")
    verify.add_argument(
        "--deep",
        action="store_true",
        help="also decompress every block and check every "
        "event's framing and digest (slower; loads numba)",
    )
    verify.add_argument(
        "--metadata",
        choices=("auto", "none"),
        default="auto",
        help="auto: check each file against its sidecar <file>.json when there is one "
        "(default); none: check the bytes only",
    )
    verify.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        metavar="N",
        help="files (or, for one file with --deep, blocks) checked in parallel "
        "(default: the usable cores)",
    )
    verify.add_argument(
        "--json", action="store_true", help="print a JSON list of per-file reports instead of lines"
    )
    add_verbosity(verify, "print only failures")
    verify.set_defaults(func=run_verify)


def run_dump(args) -> int:
    from engine.readers import open_file
    from engine.verify.dump import iter_dump_json, iter_dump_text, summarize_file

    with open_file(args.file) as reader:
        summary = summarize_file(reader)
        events = reader.events if args.events else None
        out = sys.stdout
        if args.json:
            out.writelines(iter_dump_json(summary, events))
        else:
            out.writelines(f"{line}\n" for line in iter_dump_text(summary, events))
        out.flush()
    return EXIT_OK


def run_verify(args) -> int:
    from engine.checksums import format_adler32
    from engine.verify import verify_files

    reports = verify_files(args.files, deep=args.deep, metadata=args.metadata, threads=args.jobs)
    if args.json:
        json.dump([report.to_dict() for report in reports], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for report in reports:
            if report.ok:
                if not args.quiet:
                    print(
                        f"OK {report.path} ({plural(report.event_count, 'event')}, "
                        f"{format_adler32(report.adler32)})",
                        flush=False,
                    )
            else:
                sys.stdout.flush()
                print_error(report.error)
    sys.stdout.flush()
    return most_severe_exit_code(report.error.exit_code for report in reports if not report.ok)
