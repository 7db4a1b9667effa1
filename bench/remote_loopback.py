"""Merge of remote inputs vs ``xrdcp`` of the same files, on loopback: whole commands, interleaved.

Starts Debian's ``xrootd`` on 127.0.0.1 (the same set-up as the tests: ``tests/remote_servers.py``),
generates a run of ``--size`` bytes in ``--files`` files into its exported folder, then, round
after round, times in turn

  A: ``tmbmerge merge root://127.0.0.1:PORT//run/F1 ... -o SCRATCH/out.tmb --mode MODE --quiet``
  B: ``xrdcp -f root://127.0.0.1:PORT//run/F1 ... SCRATCH/xrdcp/``
     (the files copied to local disk)

each as a whole process (start-up included), removing both outputs after each pair.  A moves
the same bytes as B plus its checks (every block's digest, the whole-file adler32, in safe mode
the read-back of the output and its fsync).  Printed: each pair's seconds, each command's
median throughput (input bytes / wall seconds), and the pair ratio B/A (A's throughput as a
fraction of xrdcp's; 1.0 is as fast), median over the pairs.

    python bench/remote_loopback.py --size 1GiB --files 8 --rounds 5 [--mode safe] [--json FILE]

Needs ``xrootd`` and ``xrdcp`` (Debian: xrootd-server, xrootd-client) and the XRootD Python
client; the run is generated under ``--dir`` (default: the system's temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from remote_servers import XrootdServer  # noqa: E402

from engine.benchmark.dataset import make_run  # noqa: E402
from engine.merge import parse_size  # noqa: E402


def timed(command: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", default="1GiB")
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--mode", default="safe", choices=("fast", "safe", "deep"))
    p.add_argument(
        "--dir", default=None, help="where the scratch outputs go (default: temporary folder)"
    )
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)

    server = XrootdServer(name="bench")
    scratch = Path(tempfile.mkdtemp(prefix="tmbmerge-remote-bench-", dir=args.dir))
    try:
        run = make_run(server.data / "run", size=parse_size(args.size), files=args.files)
        server.owned_by_server(server.data / "run")
        urls = [f"{server.root_url}/run/{path.name}" for path in run.paths]
        total = sum(path.stat().st_size for path in run.paths)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        merge = [
            sys.executable,
            "-m",
            "bindings.cli",
            "merge",
            *urls,
            "-o",
            str(scratch / "out.tmb"),
            "--mode",
            args.mode,
            "--quiet",
        ]
        copy_dir = scratch / "xrdcp"
        xrdcp = ["xrdcp", "-f", "--nopbar", *urls, f"{copy_dir}/"]
        print(
            f"{len(urls)} files, {total / 1e6:.1f} MB on root://127.0.0.1 (loopback); merge "
            f"--mode {args.mode}"
        )
        pairs = []
        for round_number in range(args.rounds + 1):  # round 0 warms both up, not counted
            copy_dir.mkdir(exist_ok=True)
            a = timed(merge, env)
            b = timed(xrdcp, env)
            for leftover in (scratch / "out.tmb", scratch / "out.tmb.json"):
                leftover.unlink(missing_ok=True)
            shutil.rmtree(copy_dir)
            if round_number:
                pairs.append((a, b))
                print(
                    f"  round {round_number}: merge {a:.2f} s ({total / a / 1e6:.0f} MB/s), "
                    f"xrdcp {b:.2f} s ({total / b / 1e6:.0f} MB/s), ratio {b / a:.2f}"
                )
        figures = {
            "files": len(urls),
            "bytes": total,
            "mode": args.mode,
            "rounds": args.rounds,
            "merge_MBps_median": round(total / statistics.median(a for a, _ in pairs) / 1e6, 1),
            "xrdcp_MBps_median": round(total / statistics.median(b for _, b in pairs) / 1e6, 1),
            "ratio_median": round(statistics.median(b / a for a, b in pairs), 3),
            "ratio_min": round(min(b / a for a, b in pairs), 3),
            "ratio_max": round(max(b / a for a, b in pairs), 3),
        }
        print(
            f"median: merge {figures['merge_MBps_median']} MB/s, xrdcp "
            f"{figures['xrdcp_MBps_median']} MB/s, merge/xrdcp throughput "
            f"{figures['ratio_median']} (min {figures['ratio_min']}, max {figures['ratio_max']})"
        )
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        server.remove()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
