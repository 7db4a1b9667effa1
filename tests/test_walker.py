"""The compiled record walk and the zstd frame walk (``engine.walker``), and that decoding blocks
(deep merges, ``verify --deep``) never loads numba: numba and its cached kernel were ~100 MB of
every deep process's resident memory."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xxhash
import zstandard

from engine.walker import (
    FRAME_BAD_BLOCK,
    FRAME_CUT_SHORT,
    WALK_COUNT_MISMATCH,
    WALK_OK,
    WALK_SHORT_HEADER,
    WALK_SHORT_PAYLOAD,
    walk_records,
    zstd_frame_end,
)

ROOT = Path(__file__).resolve().parents[1]


def _records(lengths, seed=0):
    rng = np.random.default_rng(seed)
    payloads = [rng.bytes(int(n)) for n in lengths]
    runs = [178000 + i % 3 for i in range(len(lengths))]
    events = [2**40 + 7 * i for i in range(len(lengths))]
    data = b"".join(
        struct.pack("<IQI", r, e, len(p)) + p
        for r, e, p in zip(runs, events, payloads, strict=True)
    )
    return np.frombuffer(data, dtype=np.uint8), runs, events, payloads


def test_walk_returns_every_record_and_its_payload_digest():
    lengths = [0, 1, 200, 15000, 3]
    buf, runs, events, payloads = _records(lengths)
    status, where, got_runs, got_events, offsets, got_lengths, digests = walk_records(buf, 5)
    assert (status, where) == (WALK_OK, len(buf))
    assert got_runs.dtype == np.uint32 and got_runs.tolist() == runs
    assert got_events.dtype == np.uint64 and got_events.tolist() == events
    assert got_lengths.tolist() == lengths
    starts = np.cumsum([0] + [16 + n for n in lengths[:-1]]) + 16
    assert offsets.tolist() == starts.tolist()
    assert digests.tolist() == [xxhash.xxh3_64_intdigest(p) for p in payloads]


@pytest.mark.parametrize(
    "cut, count, status, where",
    [
        (0, 4, WALK_COUNT_MISMATCH, None),  # four records where three were declared
        (0, 5, WALK_COUNT_MISMATCH, "end"),  # four records where five were declared
        (10, 4, WALK_SHORT_HEADER, "last"),  # the last header is cut
        (20, 4, WALK_SHORT_PAYLOAD, "last"),  # the last payload is cut
    ],
)
def test_walk_reports_the_first_framing_error_and_where(cut, count, status, where):
    lengths = [10, 20, 30, 40]
    buf, *_ = _records(lengths)
    last = len(buf) - (16 + 40)
    if cut == 10:
        buf = buf[: last + 10]
    elif cut == 20:
        buf = buf[: last + 16 + 20]
    got_status, got_where, *columns = walk_records(buf, count if where is not None else 3)
    assert got_status == status
    expected_where = {None: last, "end": len(buf), "last": last}[where]
    assert got_where == expected_where
    if status != WALK_COUNT_MISMATCH:  # filled up to the failing record, zeros after it
        assert columns[3].tolist() == [10, 20, 30, 0]


def test_empty_block_walks_to_its_end():
    empty = np.zeros(0, dtype=np.uint8)
    assert walk_records(empty, 0)[:2] == (WALK_OK, 0)
    assert walk_records(empty, 1)[:2] == (WALK_COUNT_MISMATCH, 0)


def test_zstd_frame_end_finds_the_end_of_one_frame_and_refuses_what_is_not_one():
    rng = np.random.default_rng(3)
    compressor = zstandard.ZstdCompressor(level=3, write_content_size=True)
    for size in (0, 100, 300_000, 2_000_000):
        frame = compressor.compress(rng.bytes(size // 2) + bytes(size - size // 2))
        start = zstandard.frame_header_size(frame)
        assert zstd_frame_end(frame, start) == len(frame)
        assert zstd_frame_end(memoryview(frame)[: len(frame) - 1], start) == FRAME_CUT_SHORT
        reserved = bytearray(frame)
        reserved[start] |= 0b110  # block type 3: reserved
        assert zstd_frame_end(bytes(reserved), start) == FRAME_BAD_BLOCK


def test_decoding_and_deep_verification_never_load_numba(tmp_path):
    """A deep verification decodes every block; numba must stay out of the process."""
    from engine.writer import TmbWriter

    path = tmp_path / "f.tmb"
    n = 50
    with TmbWriter(path, block_bytes=4096) as writer:  # 4 blocks
        writer.write_batch(np.ones(n), np.arange(n), np.full(n, 300), np.zeros(300 * n, np.uint8))
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from engine.verify import verify_file\n"
        f"report = verify_file({str(path)!r}, deep=True, metadata='none')\n"
        "print(report.ok, 'engine.walker' in sys.modules,"
        " any(m == 'numba' or m.startswith(('numba.', 'engine.kernels')) for m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True", "False"]  # verified, walked, no numba


def _walk_in_a_new_process(cache: Path) -> list[str]:
    script = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import numpy as np, struct\n"
        "from engine.walker import walk_records\n"
        "buf = np.frombuffer(struct.pack('<IQI', 1, 2, 3) + b'abc', np.uint8)\n"
        "status, where, *_ , digests = walk_records(buf, 1)\n"
        "print(status, where, digests[0], 'llvmlite' in sys.modules)\n"
    )
    env = {**os.environ, "TMBMERGE_CODE_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_the_compiled_walk_is_cached_and_later_processes_run_it_without_llvm(tmp_path):
    digest = str(xxhash.xxh3_64_intdigest(b"abc"))
    assert _walk_in_a_new_process(tmp_path) == ["0", "19", digest, "True"]  # compiled, cached
    (cached,) = tmp_path.glob("walk_records-*.code")
    assert _walk_in_a_new_process(tmp_path) == ["0", "19", digest, "False"]  # loaded, no LLVM
    cached.write_bytes(cached.read_bytes()[:-1] + b"\xcc")  # a torn or tampered file
    assert _walk_in_a_new_process(tmp_path) == ["0", "19", digest, "True"]  # refused, rebuilt
    assert _walk_in_a_new_process(tmp_path) == ["0", "19", digest, "False"]


def test_code_that_needs_linking_is_not_cached():
    import llvmlite.binding as llvm

    from engine.codecache import function_code

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    machine = llvm.Target.from_default_triple().create_target_machine()
    alone = "define i64 @f(i64 %x) {\n  %y = add i64 %x, 1\n  ret i64 %y\n}\n"
    with_global = "@g = global i64 5\ndefine i64 @f() {\n  %v = load i64, ptr @g\n  ret i64 %v\n}\n"
    calling = (
        "declare i64 @h(i64)\n"
        "define i64 @f(i64 %x) {\n  %v = call i64 @h(i64 %x)\n  ret i64 %v\n}\n"
    )
    code = function_code(machine.emit_object(llvm.parse_assembly(alone)), "f")
    assert code is not None and 0 < len(code) < 64
    for ir in (with_global, calling):
        assert function_code(machine.emit_object(llvm.parse_assembly(ir)), "f") is None
    assert function_code(b"not an object file", "f") is None
