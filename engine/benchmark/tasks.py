"""The measurements, as named tasks that take plain data and return plain data.

Each task is a JSON-able dict (``{"task": "merge", "mode": "safe", ...}``) run by ``run_task``,
normally in a fresh interpreter (``isolate.run_isolated``) so that its peak memory is its own
and no cache, pool or compiled kernel of an earlier measurement helps it.  Every task times
only the work itself (its interpreter start and imports are outside the clock) and reports
``seconds`` and ``bytes`` (input bytes), plus how much of its input was in the page cache when
it started (``input_resident``: 1.0 means the read side ran from memory).  Tasks that decode
events load numba's cached kernels before the clock starts (``warmup_seconds``).

Tasks: ``storage`` (write+fsync, cold read, cached read), ``copy`` (the floor: concatenate the
run), ``merge`` (a mode, 1 job with ``merge_files`` or N jobs with ``merge_run``), ``reencode``
(the copyd0om way), ``codecs`` (per-core checksum and zstd rates), ``zstd_all`` (every block of
the run decompressed on N threads).
"""

from __future__ import annotations

from pathlib import Path

from . import cpu, pagecache, storage


def run_task(task: dict) -> dict:
    """Run one benchmark task (a worker process's job) and return its measurements."""
    name = task["task"]
    try:
        fn = _TASKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark task {name!r}") from None
    return fn(task)


def _storage(task: dict) -> dict:
    path = Path(task["out_dir"]) / "storage.bin"
    try:
        write = storage.write_sequential(path, task["size"])
        state = pagecache.make_cold(path)
        cold = storage.read_sequential(path)
        cold.update(state)
        cached = storage.read_sequential(path)  # the first read brought it in
        cached["resident_fraction"] = pagecache.resident_fraction(path)
        return {"write": write, "read_cold": cold, "read_cached": cached}
    finally:
        path.unlink(missing_ok=True)


def _resident(task: dict) -> float | None:
    return pagecache.files_resident_fraction(task["inputs"])


def _copy(task: dict) -> dict:
    resident = _resident(task)
    result = storage.concatenate(
        task["inputs"], Path(task["out_dir"]) / "copy.bin", streamed=bool(task.get("streamed"))
    )
    result["input_resident"] = resident
    return result


def _merge(task: dict) -> dict:
    import time

    from ..merge import MergeSpec, merge_files, merge_run

    inputs = [Path(p) for p in task["inputs"]]
    out_dir = Path(task["out_dir"])
    jobs = int(task.get("jobs", 1))
    spec = MergeSpec(mode=task["mode"], threads=int(task.get("threads") or _cores()))
    warmup = _warm_imports() + (_warm_kernels(build=False) if spec.decodes_events else 0.0)
    resident = _resident(task)
    input_bytes = storage.total_size(inputs)
    if jobs == 1:
        started = time.perf_counter()
        report = merge_files(inputs, out_dir / "merged.tmb", spec)
        seconds = time.perf_counter() - started
        outputs = [report]
    else:
        target = int(task.get("target_size") or input_bytes * 1.1 / jobs)
        started = time.perf_counter()
        run_report = merge_run(inputs, out_dir, target_size=target, spec=spec, jobs=jobs)
        seconds = time.perf_counter() - started
        if run_report.failures:
            raise RuntimeError(f"merge_run failed: {run_report.failures[0]}")
        outputs = run_report.outputs
    reported = max((o.peak_rss_bytes for o in outputs), default=0) if jobs > 1 else 0
    return {
        "seconds": seconds,
        "bytes": input_bytes,
        "output_bytes": sum(o.file_size for o in outputs),
        "outputs": len(outputs),
        "events": sum(o.event_count for o in outputs),
        "jobs": jobs,
        "threads": spec.threads,
        "mode": spec.mode,
        "output_seconds": [round(o.seconds, 4) for o in outputs],
        "input_resident": resident,
        "warmup_seconds": warmup,
        "reported_peak_rss_bytes": reported,
    }


def _reencode(task: dict) -> dict:
    from .reencode import reencode_files

    warmup = _warm_kernels()
    resident = _resident(task)
    result = reencode_files(task["inputs"], Path(task["out_dir"]) / "reencoded.tmb")
    result.update(input_resident=resident, warmup_seconds=warmup)
    return result


def _warm_imports() -> float:
    """Import what the merge imports lazily on its way (the catalogue, verification)."""
    import importlib
    import time

    started = time.perf_counter()
    for name in ("metadata", "verify", "verify.merged", "verify.crosscheck"):
        importlib.import_module(f"{__package__.rsplit('.', 1)[0]}.{name}")
    return time.perf_counter() - started


def _warm_kernels(*, build: bool = True) -> float:
    """Load the compiled event loops before the clock starts; return what that took.

    Importing is not enough: the record walk is compiled (llvmlite, ~0.1 s) and numba loads its
    cached framing kernel (~1 s with numba's own set-up) at their first calls, so one tiny block
    is decoded, and built first with ``build`` (the re-encode builds blocks; a merge never does,
    and must not be charged numba's memory).  A long-lived merge process pays this once; the
    figures are about throughput, so a fresh interpreter's one-off start-up is reported apart
    (``warmup_seconds``), not folded in.  merge_run's worker processes still pay it inside the
    clock: that is what jobs cost.
    """
    import struct
    import time

    import numpy as np

    from ..blocks import build_block, decode_block
    from ..checksums import xxh3_64
    from ..codecs import codec_by_name
    from ..format import BlockHeader

    started = time.perf_counter()
    codec = codec_by_name("zstd")
    if build:
        n, size = 2, 8
        built = build_block(
            np.ones(n, np.uint32),
            np.arange(1, n + 1, dtype=np.uint64),
            np.full(n, size, np.uint32),
            np.zeros(n * size, np.uint8),
            np.arange(0, n * size, size, dtype=np.uint64),
            codec,
        )
        header, data = built.header, built.data
    else:  # one record framed by hand: run 1, event 1, an 8-byte payload
        records = struct.pack("<IQI", 1, 1, 8) + bytes(8)
        data = codec.compress(records)
        header = BlockHeader(
            codec.codec_id, len(data), len(records), 1, xxh3_64(data), xxh3_64(records)
        )
    decode_block(header, data, region="warm-up", offset=0)
    return time.perf_counter() - started


def _codecs(task: dict) -> dict:
    blocks = cpu.load_blocks(task["inputs"], limit_bytes=int(task["sample_bytes"]))
    return cpu.per_core(blocks, min_seconds=float(task.get("min_seconds", 0.3)))


def _zstd_all(task: dict) -> dict:
    blocks = cpu.load_blocks(task["inputs"])
    return cpu.decompress_blocks(blocks, threads=int(task.get("threads") or _cores()))


def _cores() -> int:
    from ..host import usable_cores

    return usable_cores()


_TASKS = {
    "storage": _storage,
    "copy": _copy,
    "merge": _merge,
    "reencode": _reencode,
    "codecs": _codecs,
    "zstd_all": _zstd_all,
}
