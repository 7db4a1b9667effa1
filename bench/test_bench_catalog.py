"""Catalogue requests of a declaring ``merge-run`` at campaign scale, against the local SAM web
server.

Issue 16's measure: a ``merge-run --catalog samweb+http://... --declare`` of 1,000 inputs, the
inputs declared beforehand (with their raw parents) straight into the test server
(``tests/samweb_server.py``), which counts every request it is sent.  Two plans: all inputs in
one output, and ten outputs (the per-output work: the not-merged-twice check before and after
each declaration, and the POST).  The figure is the server's own count, so it is the same for
any version of the client; ``catalog.requests`` and ``seconds_waiting`` from the run's report
are recorded when the client reports them.

Run: ``python -m pytest bench/test_bench_catalog.py -p no:cacheprovider -s`` (``TMBMERGE_BENCH_
CATALOG_INPUTS`` changes the number of inputs, default 1000).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from samweb_server import SamWebServer  # noqa: E402

INPUTS = int(os.environ.get("TMBMERGE_BENCH_CATALOG_INPUTS", "1000"))
RUN = 178000
EVENTS = 2


@pytest.fixture(scope="module")
def many_inputs(bench_dir) -> Path:
    from engine.generate import file_name, first_events, generate_file

    folder = bench_dir / f"catalog-{INPUTS}"
    folder.mkdir()
    firsts = first_events(0, RUN, list(range(INPUTS)), EVENTS)
    for partition in range(INPUTS):
        generate_file(
            folder / file_name(RUN, partition),
            run=RUN,
            partition=partition,
            first_event=firsts[partition],
            n_events=EVENTS,
            mean_event_kb=1.0,
            fsync=False,
        )
    return folder


def kind(method: str, path: str) -> str:
    path = path.split("?")[0]
    if "/lineage/" in path:
        return f"{method} lineage"
    if path.endswith("/metadata"):
        return f"{method} metadata" if "/files/name/" in path else f"{method} metadata (batch)"
    return f"{method} {path.rsplit('/api', 1)[-1]}"


@pytest.mark.parametrize("outputs", [1, 10])
def test_requests_of_a_declaring_merge_run(many_inputs, bench_scratch, bench_ratios, outputs):
    from engine.merge.run import merge_run
    from engine.merge.spec import MergeSpec

    total = sum(p.stat().st_size for p in many_inputs.glob("*.tmb"))
    with SamWebServer("dzero") as server:
        for sidecar in sorted(many_inputs.glob("*.tmb.json")):
            md = json.loads(sidecar.read_text())
            for parent in md.get("parents", []):
                if parent["file_name"] not in server.store:
                    server.put(
                        {"file_name": parent["file_name"], "file_size": 1, "data_tier": "raw"}
                    )
            server.put(md)
        server.requests.clear()
        spec = MergeSpec(catalog=server.url, declare=True, fsync=False)
        started = time.perf_counter()
        report = merge_run(
            [many_inputs], bench_scratch / "out", spec=spec, target_size=total // outputs + 1
        )
        seconds = time.perf_counter() - started
        requests = list(server.requests)
    assert report.ok, report.failures
    outputs = len(report.outputs)
    assert all(o.declared == "declared" for o in report.outputs)
    counts = Counter(kind(method, path) for method, path, _ in requests)
    budget = getattr(report, "catalog", None) or {}
    print(
        f"\n{INPUTS} inputs -> {outputs} outputs: {len(requests)} catalogue requests "
        f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); run {seconds:.1f} s"
        + (
            f"; client counted {budget['requests']}, waiting {budget['seconds_waiting']:.2f} s"
            if budget
            else ""
        )
    )
    bench_ratios.add(
        f"catalog[{outputs}]",
        f"requests, {INPUTS} in -> {outputs} out",
        float(len(requests)),
        target="~30 for 1,000 inputs",
        met=len(requests) <= 30 + 3 * outputs,
    )
