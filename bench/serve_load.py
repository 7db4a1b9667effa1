"""Load on the campaign service: 1,000 API reads and 200 writes from 20 concurrent clients.

Usage: ``python bench/serve_load.py [--clients 20 --reads 1000 --writes 200] [--keep DIR]``

Builds a small campaign with the real commands (3 runs generated, imported into a sqlite
catalogue, merged by ``merge-run --declare`` and certified), starts ``tmbmerge serve`` as its
own process on 127.0.0.1 (one uvicorn worker, as a user starts it), and runs the clients as
threads of this process, each with its own HTTP session and its own site token:

- reads, spread evenly over ``GET /api/datasets``, ``/api/datasets/{name}``, ``/api/runs/{run}``,
  ``/api/recovery`` and ``/api/certification/{run}?reference=...``;
- writes, every one of which must succeed: each client claims two datasets of its own and moves
  them through the plan's states (``POST .../claim`` and ``POST .../status``).

Reads and writes are interleaved.  Any answer other than the expected status, any connection
error or timeout counts as an error.  First, as the baseline of the same run, the same clients
make the same number of requests to ``GET /api/health`` (the framework, the server and the
HTTP round trip, no store): what the machine gives any request at that moment.  Prints per-kind
latency percentiles (p50/p95/p99/max), the throughput and the machine's load average before
and after, as a Markdown table for bench/RESULTS.md; exits 1 if there was any error.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

RUNS = (178000, 178002, 178004)
STATES = ("copied-to-site", "processed", "merged", "declared", "copied-back")


def tmbmerge(*args) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "bindings.cli", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"tmbmerge {' '.join(map(str, args))}: {done.stderr}")
    return done.stdout


def build(folder: Path) -> str:
    from conftest import generate_tmb_run

    catalog = f"sqlite:///{folder / 'campaign.db'}"
    for seed, run in enumerate(RUNS):
        generate_tmb_run(folder / f"unmerged-{run}", run=run, partitions=range(8), seed=seed + 1)
        tmbmerge(
            "catalog",
            "import",
            folder / f"unmerged-{run}",
            "--catalog",
            catalog,
            "--declare-parents",
        )
        tmbmerge(
            "merge-run",
            folder / f"unmerged-{run}",
            "--out-dir",
            folder / "merged",
            "--catalog",
            catalog,
            "--declare",
            "--quiet",
        )
    tmbmerge(
        "certify",
        *[folder / f"unmerged-{run}" for run in RUNS],
        folder / "merged",
        "--catalog",
        catalog,
    )
    return catalog


def start_server(catalog: str, journals: Path, log: Path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bindings.cli",
            "serve",
            "--catalog",
            catalog,
            "--port",
            "0",
            "--journals",
            str(journals),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=open(log, "w"),
        text=True,
    )
    line = process.stdout.readline()
    if not line.startswith("serving "):
        process.kill()
        raise SystemExit(f"server did not start: {line!r}; see {log}")
    url = line.split(" on ")[1].strip().rstrip("/")
    for _ in range(600):
        try:
            requests.get(url + "/api/datasets", timeout=5)
            return process, url
        except requests.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("server not answering")


def plan_client(
    index: int, reads: int, writes: int
) -> list[tuple[str, str, str, str, dict | None, int]]:
    """(kind, label, method, path, body, expected status) of one client, reads and writes
    interleaved."""
    rng = random.Random(index)
    read_paths = [
        ("/api/datasets", "/api/datasets"),
        ("/api/datasets/{name}", "/api/datasets/load-{i}-a"),
        ("/api/runs/{run}", "/api/runs/{run}"),
        ("/api/recovery", "/api/recovery"),
        ("/api/certification/{run}", "/api/certification/{run}?reference=178002"),
    ]
    steps = []
    for k in range(reads):
        label, path = read_paths[k % len(read_paths)]
        steps.append(
            (
                "read",
                f"GET {label}",
                "GET",
                path.format(i=index, run=RUNS[k % len(RUNS)]),
                None,
                200,
            )
        )
    chain = []
    for suffix in ("a", "b"):
        name = f"load-{index}-{suffix}"
        chain.append(("write", "POST .../claim", "POST", f"/api/datasets/{name}/claim", {}, 201))
        chain += [
            ("write", "POST .../status", "POST", f"/api/datasets/{name}/status", {"state": s}, 200)
            for s in STATES
        ]
    chain = chain[:writes]
    # interleave: writes keep their order, reads go in between at random places
    slots = sorted(rng.sample(range(reads + len(chain)), len(chain)))
    out, w, r = [], iter(chain), iter(steps)
    for k in range(reads + len(chain)):
        out.append(next(w) if slots and k == slots[0] else next(r))
        if slots and k == slots[0]:
            slots.pop(0)
    return out


def run_client(url: str, token: str, plan, results: list, lock: threading.Lock) -> None:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    for kind, label, method, path, body, expected in plan:
        start = time.perf_counter()
        try:
            response = session.request(method, url + path, json=body, timeout=60)
            status = response.status_code
            _ = response.content  # the whole body is read, as a client would
        except requests.RequestException as exc:
            status = f"{type(exc).__name__}"
        elapsed = time.perf_counter() - start
        with lock:
            results.append((kind, label, elapsed, status == expected, status))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--reads", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--keep", help="build the campaign in this folder and keep it")
    args = parser.parse_args()
    if args.reads % args.clients or args.writes % args.clients or args.writes // args.clients > 12:
        raise SystemExit(
            "reads and writes must divide evenly among clients, at most 12 writes each"
        )
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="serve-load-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        catalog = build(folder)
        from bindings.serve.store import CampaignStore

        store = CampaignStore(catalog)
        tokens = []
        for i in range(args.clients):
            for suffix in ("a", "b"):
                store.add_dataset(f"load-{i}-{suffix}", runs=(RUNS[0], RUNS[-1]))
            tokens.append(store.add_token(f"site-{i}"))
        process, url = start_server(catalog, folder / "merged", folder / "serve.log")
        try:
            plans = [
                plan_client(i, args.reads // args.clients, args.writes // args.clients)
                for i in range(args.clients)
            ]
            per_client = (args.reads + args.writes) // args.clients
            baseline_plans = [
                [("baseline", "GET /api/health", "GET", "/api/health", None, 200)] * per_client
                for _ in range(args.clients)
            ]
            baseline, _, _, _ = load(url, tokens, baseline_plans)
            results, wall, load_before, load_after = load(url, tokens, plans)
        finally:
            process.terminate()
            process.wait(timeout=30)
        report(results, baseline, wall, load_before, load_after, args)
        return 1 if any(not ok for *_, ok, _ in results + baseline) else 0
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def load(url: str, tokens: list[str], plans: list) -> tuple[list, float, tuple, tuple]:
    """Run every client's plan at once; (results, wall seconds, load average before and after)."""
    results, lock = [], threading.Lock()
    load_before = os.getloadavg()
    started = time.perf_counter()
    with ThreadPoolExecutor(len(plans)) as pool:
        for future in [
            pool.submit(run_client, url, tokens[i], plan, results, lock)
            for i, plan in enumerate(plans)
        ]:
            future.result()
    return results, time.perf_counter() - started, load_before, os.getloadavg()


def report(results, baseline, wall, load_before, load_after, args) -> None:
    def row(label, items):
        ms = np.array([elapsed for _, _, elapsed, _, _ in items]) * 1000
        errors = sum(1 for *_, ok, _ in items if not ok)
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        print(
            f"| {label} | {len(items)} | {errors} | {p50:.0f} | {p95:.0f} | {p99:.0f} | "
            f"{ms.max():.0f} |"
        )

    print(
        f"{args.clients} clients, {args.reads} reads + {args.writes} writes in {wall:.1f} s "
        f"({len(results) / wall:.0f} requests/s); load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after; {os.cpu_count()} cores"
    )
    print(
        "\n| requests | count | errors | p50 ms | p95 ms | p99 ms | max ms |\n"
        "|---|--:|--:|--:|--:|--:|--:|"
    )
    row("baseline: GET /api/health", baseline)
    for kind in ("read", "write"):
        row(f"all {kind}s", [r for r in results if r[0] == kind])
        for label in sorted({r[1] for r in results if r[0] == kind}):
            row(label, [r for r in results if r[1] == label])
    bad = [r for r in results + baseline if not r[3]]
    for kind, endpoint, _, _, status in bad[:10]:
        print(f"error: {kind} {endpoint}: {status}")


if __name__ == "__main__":
    sys.exit(main())
