"""Container I/O benchmarks: the TMB writer and reader against plain file I/O on the same bytes.

Run on demand (the default test run collects only ``tests/``)::

    python -m pytest bench/test_bench_io.py --benchmark-only -p no:cacheprovider

Data: one synthetic run file from ``engine.generate.generate_file`` (structured, physics-like
payloads, ~15 kB events; ``TMB_BENCH_EVENTS`` events, 24000 by default: ~360 MB of payload),
decoded once into the arrays ``TmbWriter.write_batch`` takes.  Each measurement is paired with
its baseline in the same run:

- writing: ``TmbWriter.write_batch`` + close (fsync included), zstd level 3 (the default) on 1
  and 2 threads, zstd level 1 and the ``none`` codec, against ``os.write`` of the same payload
  bytes in 4 MiB pieces + fsync.  Throughput is counted in payload bytes (what the caller hands
  over).
- reading: ``iter_blocks`` (every block's header and stored-bytes digest checked, no
  decompression), the fast ``verify_file`` (that plus the whole-file adler32), deep decoding
  (``decode`` of every block, one thread), deep ``verify_file`` (all cores) and ``iter_events``
  (a Python object per event), against two plain sequential reads of the same file:
  ``readinto`` one reused 4 MiB buffer (the floor) and ``read(4 MiB)`` (a new bytes object per
  chunk, like a reader whose blocks outlive the next read).  Page cache warm (the file was just
  written or read); the ``cold`` pair drops the file's pages with ``posix_fadvise(DONTNEED)``
  before every round.

Ratios are the baseline's best time divided by this best time (1.0: as fast as plain I/O); they
go into each benchmark's ``extra_info["ratio_to_plain"]`` with its MB/s, and into a table printed at
the end of the module; bench/RESULTS.md ("Container I/O") records one run.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import pytest
from plain_io import write_plain

N_EVENTS = int(os.environ.get("TMB_BENCH_EVENTS", "24000"))
RUN = 176852
CHUNK = 4 << 20
ROUNDS = 3  # writes: each round writes and fsyncs ~300 MB
READ_ROUNDS = 7  # reads are cheap; more rounds make the best time robust to a busy machine
#: Plain sequential reads of the same file: into one reused 4 MiB buffer (the floor: a memcpy
#: from the page cache into cache-hot memory), and ``read(4 MiB)`` returning a new bytes object
#: per chunk (like for like with a reader whose blocks outlive the next read).
READ_BASELINES = ("read: plain readinto", "read: plain read")
#: iter_blocks should read at least this fraction of plain sequential reading's speed.
ITER_BLOCKS_TARGET = 0.8

#: Best (minimum) seconds of each measurement, by name, for the ratios and the summary.
BEST: dict[str, float] = {}
ROWS: list[tuple[str, float, float, dict[str, float]]] = []


# ---------------------------------------------------------------------------------------------
# Data


@pytest.fixture(scope="module")
def workdir(bench_dir) -> Path:
    """Where this module's files go (``--bench-dir``, see bench/conftest.py)."""
    path = bench_dir / "container-io"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def source(workdir) -> Path:
    """A synthetic run file (zstd level 3, 4 MiB blocks): the read benchmarks' input."""
    from engine.generate import generate_file

    path = workdir / "source.tmb"
    generate_file(
        path,
        run=RUN,
        partition=0,
        first_event=1,
        n_events=N_EVENTS,
        seed=2005,
        sidecar=False,
        fsync=False,
    )
    return path


@pytest.fixture(scope="module")
def batch(source):
    """(runs, events, lengths, payload bytes) of every event of ``source``, for ``write_batch``."""
    from engine.readers import open_file

    with open_file(source) as reader:
        runs, events, lengths = (
            reader.events.run.copy(),
            reader.events.event.copy(),
            reader.events.length.copy(),
        )
        payload = np.empty(int(lengths.sum(dtype=np.int64)), dtype=np.uint8)
        pos = 0
        for block in reader.iter_blocks():
            decoded = reader.decode(block)
            records = np.frombuffer(decoded.records, dtype=np.uint8)
            for start, length in zip(
                decoded.payload_offsets.tolist(), decoded.events.length.tolist(), strict=True
            ):
                payload[pos : pos + length] = records[start : start + length]
                pos += length
    assert pos == len(payload)
    return runs, events, lengths, payload


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    """Print every measurement of the module as a markdown table at the end (past output
    capture)."""
    yield
    if not ROWS:
        return
    lines = [
        "",
        (
            f"Container I/O: {N_EVENTS} events, {platform.machine()}, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.2f} at the end"
        ),
        "| Measurement | Best s | MB/s | Speed relative to plain I/O (baseline time / this time) |",
        "|---|--:|--:|---|",
    ]
    for name, seconds, mb_s, ratios in ROWS:
        shown = (
            "; ".join(f"{ratio:.2f}x {baseline}" for baseline, ratio in ratios.items())
            or "(baseline)"
        )
        lines.append(f"| {name} | {seconds:.3f} | {mb_s:,.0f} | {shown} |")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print("\n".join(lines), flush=True)


# ---------------------------------------------------------------------------------------------
# Plain I/O baselines and helpers


def read_plain(path: Path) -> int:
    buf = bytearray(CHUNK)
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total


def read_new_buffers(path: Path) -> int:
    """Sequential ``read(4 MiB)``: a new bytes object per chunk, as a reader handing out blocks
    must."""
    total = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            total += len(chunk)
    return total


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def measure(
    benchmark,
    name: str,
    fn,
    *,
    nbytes: int,
    baselines=(),
    setup=None,
    rounds: int = ROUNDS,
    book=None,
    target: float | None = None,
):
    """Run ``fn`` under pytest-benchmark; record its best time, MB/s and ratio to each baseline.

    With ``book`` (the ``bench_ratios`` fixture) the ratios also go to the session's ratio list,
    marked met or missed against ``target`` when one is given.
    """
    kwargs = {"setup": setup} if setup is not None else {}
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0, **kwargs)
    best = benchmark.stats.stats.min
    BEST[name] = best
    mb_s = nbytes / best / 1e6
    benchmark.extra_info["MB_per_s"] = round(mb_s, 1)
    benchmark.extra_info["bytes"] = nbytes
    ratios = {baseline: BEST[baseline] / best for baseline in baselines}
    if ratios:
        benchmark.extra_info["ratio_to_plain"] = {k: round(v, 3) for k, v in ratios.items()}
    ROWS.append((name, best, mb_s, ratios))
    if book is not None:
        for baseline, ratio in ratios.items():
            book.add(
                benchmark.name,
                f"{name} / {baseline}",
                ratio,
                target=None if target is None else f">= {target}",
                met=None if target is None else ratio >= target,
            )
    return best


def ensure_baseline(name: str, fn, setup=None, rounds: int = ROUNDS) -> None:
    """Measure a baseline (best of ``rounds``) if its own benchmark has not run in this session."""
    if name in BEST:
        return
    times = []
    for _ in range(rounds):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    BEST[name] = min(times)


# ---------------------------------------------------------------------------------------------
# Writing


def test_write_plain(benchmark, workdir, batch):
    path = workdir / "plain.bin"
    payload = batch[3]
    measure(
        benchmark,
        "write: os.write + fsync",
        lambda: write_plain(path, payload),
        nbytes=len(payload),
    )
    remove(path)


@pytest.mark.parametrize(
    "codec, level, threads",
    [("zstd", 3, 1), ("zstd", 3, 2), ("zstd", 1, 1), ("none", None, 1)],
    ids=["zstd3-1thread", "zstd3-2threads", "zstd1-1thread", "none"],
)
def test_write_tmb(benchmark, bench_ratios, workdir, batch, codec, level, threads):
    from engine.writer import TmbWriter

    runs, events, lengths, payload = batch
    path = workdir / f"written-{codec}-{threads}.tmb"
    plain = workdir / "plain.bin"
    ensure_baseline("write: os.write + fsync", lambda: write_plain(plain, payload))
    remove(plain)

    def write():
        with TmbWriter(
            path, codec=codec, level=level, threads=threads, overwrite=True, fsync=True
        ) as writer:
            writer.write_batch(runs, events, lengths, payload)

    name = f"write: TmbWriter {codec}{'' if level is None else f'-{level}'}, {threads} thread(s)"
    measure(
        benchmark,
        name,
        write,
        nbytes=len(payload),
        baselines=["write: os.write + fsync"],
        setup=lambda: remove(path),
        book=bench_ratios,
    )
    benchmark.extra_info["file_bytes"] = path.stat().st_size
    remove(path)


# ---------------------------------------------------------------------------------------------
# Reading (warm page cache)


def test_read_plain(benchmark, source):
    read_plain(source)  # warm the cache
    measure(
        benchmark,
        "read: plain readinto",
        lambda: read_plain(source),
        nbytes=source.stat().st_size,
        rounds=READ_ROUNDS,
    )


def test_read_plain_new_buffers(benchmark, source):
    read_plain(source)
    measure(
        benchmark,
        "read: plain read",
        lambda: read_new_buffers(source),
        nbytes=source.stat().st_size,
        rounds=READ_ROUNDS,
    )


def warm_baselines(source: Path) -> None:
    """Warm the page cache; measure the read baselines unless their benchmarks ran already."""
    read_plain(source)
    ensure_baseline("read: plain readinto", lambda: read_plain(source), rounds=READ_ROUNDS)
    ensure_baseline("read: plain read", lambda: read_new_buffers(source), rounds=READ_ROUNDS)


def iter_blocks(path: Path) -> int:
    from engine.readers import open_file

    with open_file(path) as reader:
        return sum(block.size for block in reader.iter_blocks())


def test_read_iter_blocks(benchmark, bench_ratios, source):
    """Each block read into bytes of its own and checked in the calling thread."""
    warm_baselines(source)
    measure(
        benchmark,
        "read: iter_blocks (digests)",
        lambda: iter_blocks(source),
        nbytes=source.stat().st_size,
        baselines=READ_BASELINES,
        rounds=READ_ROUNDS,
    )


def check_blocks(path: Path) -> int:
    from engine.readers import open_file

    with open_file(path) as reader:
        return sum(header.compressed_length for header in reader.check_blocks(threads=2))


def test_read_check_blocks(benchmark, bench_ratios, source):
    """Verification reading (what verify and the post-merge check use): two threads each read a
    whole block into a reused buffer and check and hash it while it is still in the CPU cache."""
    warm_baselines(source)
    measure(
        benchmark,
        "read: check_blocks (digests, 2 threads)",
        lambda: check_blocks(source),
        nbytes=source.stat().st_size,
        baselines=READ_BASELINES,
        rounds=READ_ROUNDS,
        book=bench_ratios,
        target=ITER_BLOCKS_TARGET,
    )


def test_read_verify_fast(benchmark, source):
    from engine.verify import verify_file

    warm_baselines(source)

    def verify():
        assert verify_file(source, metadata="none").ok

    measure(
        benchmark,
        "read: verify_file fast (digests + adler32)",
        verify,
        nbytes=source.stat().st_size,
        baselines=READ_BASELINES,
        rounds=READ_ROUNDS,
    )


def decode_all(path: Path) -> int:
    from engine.readers import open_file

    with open_file(path) as reader:
        return sum(len(reader.decode(block).records) for block in reader.iter_blocks())


def test_read_deep_decode(benchmark, source):
    warm_baselines(source)
    decode_all(source)  # numba kernels loaded and cached before timing
    measure(
        benchmark,
        "read: decode every block, 1 thread",
        lambda: decode_all(source),
        nbytes=source.stat().st_size,
        baselines=READ_BASELINES,
        rounds=READ_ROUNDS,
    )


def test_read_verify_deep(benchmark, source):
    from engine.host import usable_cores
    from engine.verify import verify_file

    warm_baselines(source)
    threads = usable_cores()

    def verify():
        assert verify_file(source, deep=True, metadata="none", threads=threads).ok

    measure(
        benchmark,
        f"read: verify_file deep, {threads} threads",
        verify,
        nbytes=source.stat().st_size,
        baselines=READ_BASELINES,
        rounds=READ_ROUNDS,
    )


def test_read_iter_events(benchmark, source):
    from engine.readers import open_file

    warm_baselines(source)

    def events():
        with open_file(source) as reader:
            return sum(len(event.payload) for event in reader.iter_events())

    measure(
        benchmark,
        "read: iter_events (Python object per event)",
        events,
        nbytes=source.stat().st_size,
        baselines=READ_BASELINES,
        rounds=READ_ROUNDS,
    )


# ---------------------------------------------------------------------------------------------
# Reading (cold: the file's pages dropped before every round)


def test_read_plain_cold(benchmark, source):
    measure(
        benchmark,
        "cold read: plain readinto",
        lambda: read_plain(source),
        nbytes=source.stat().st_size,
        setup=lambda: drop_cache(source),
        rounds=READ_ROUNDS,
    )


def test_read_iter_blocks_cold(benchmark, bench_ratios, source):
    ensure_baseline(
        "cold read: plain readinto",
        lambda: read_plain(source),
        setup=lambda: drop_cache(source),
        rounds=READ_ROUNDS,
    )
    measure(
        benchmark,
        "cold read: iter_blocks (digests)",
        lambda: iter_blocks(source),
        nbytes=source.stat().st_size,
        baselines=["cold read: plain readinto"],
        setup=lambda: drop_cache(source),
        rounds=READ_ROUNDS,
        book=bench_ratios,
        target=ITER_BLOCKS_TARGET,
    )
