"""Walking what a block holds: the records of a decoded block, the block headers of a zstd frame.

Strategy: every decoded block's records are walked (16-byte header, payload) and every payload
hashed, so that loop must not run in the interpreter (0.2 kB events: 20,000 per block).  It is
written here once in LLVM IR, compiled at its first use by llvmlite (the compiler library numba
is built on) into a C function called through ctypes, which releases the GIL, so the read-back's
threads walk blocks on all cores.  Its machine code is cached on disk (``codecache``): later
processes load it without loading LLVM.  Not numba: loading numba and a cached kernel costs
~100 MB resident and ~1 CPU-s per process (numba's type system, its LLVM set-up), which made deep
mode's peak RSS 160-220 MB whatever the merge's size; llvmlite alone costs ~70 MB and ~0.2 s in
the one process that compiles, the cached code nothing measurable.  The payload digest is the
xxh3-64 of the C library in the ``xxhash`` package, passed in as a function pointer
(``checksums``).

``zstd_frame_end`` walks the 3-byte block headers of a zstd frame (never its contents), a few
dozen per block, in plain Python.

A malformed block is reported as a status code and the byte offset of the failing record rather
than an exception; ``engine.blocks`` turns it into a ``FramingError``.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

import numpy as np

from . import codecache
from .checksums import xxh3_64_function_address
from .format import RECORD_HEADER_SIZE

WALK_OK = 0
WALK_SHORT_HEADER = 1  # a record header runs past the end of the block
WALK_SHORT_PAYLOAD = 2  # a payload runs past the end of the block
WALK_COUNT_MISMATCH = 3  # the records do not number what the header says
WALK_MESSAGES = {
    WALK_SHORT_HEADER: "record header runs past the end of the block",
    WALK_SHORT_PAYLOAD: "record payload runs past the end of the block",
    WALK_COUNT_MISMATCH: "block holds a different number of records than its header says",
}

# walk_records(buf, size, count, runs, events, offsets, lengths, digests, where, xxh3) -> status:
# fills the columns of the records it walks and stores where it stopped (the failing record's
# offset, or the end) in ``where[0]``.  Record header: run u32, event u64, payload length u32,
# little-endian (``{decode}``: byte-swapped on a big-endian host, plain copies elsewhere).
_WALK_IR = r"""
declare i32 @llvm.bswap.i32(i32)
declare i64 @llvm.bswap.i64(i64)

define i32 @walk_records(ptr %buf, i64 %size, i64 %count, ptr %runs, ptr %events, ptr %offsets,
                         ptr %lengths, ptr %digests, ptr %where, ptr %xxh3) {
entry:
  br label %loop
loop:
  %pos = phi i64 [0, %entry], [%end, %record]
  %i = phi i64 [0, %entry], [%next, %record]
  %more = icmp ult i64 %pos, %size
  br i1 %more, label %counted, label %done
counted:
  %extra = icmp uge i64 %i, %count
  br i1 %extra, label %count_mismatch, label %header
header:
  %start = add i64 %pos, 16
  %short_header = icmp ugt i64 %start, %size
  br i1 %short_header, label %header_cut, label %read
read:
  %p_run = getelementptr i8, ptr %buf, i64 %pos
  %run_le = load i32, ptr %p_run, align 1
  %p_event = getelementptr i8, ptr %p_run, i64 4
  %event_le = load i64, ptr %p_event, align 1
  %p_length = getelementptr i8, ptr %p_run, i64 12
  %length_le = load i32, ptr %p_length, align 1
{decode}
  %length64 = zext i32 %length to i64
  %end = add i64 %start, %length64
  %short_payload = icmp ugt i64 %end, %size
  br i1 %short_payload, label %payload_cut, label %record
record:
  %to_run = getelementptr i32, ptr %runs, i64 %i
  store i32 %run, ptr %to_run
  %to_event = getelementptr i64, ptr %events, i64 %i
  store i64 %event, ptr %to_event
  %to_offset = getelementptr i64, ptr %offsets, i64 %i
  store i64 %start, ptr %to_offset
  %to_length = getelementptr i32, ptr %lengths, i64 %i
  store i32 %length, ptr %to_length
  %payload = getelementptr i8, ptr %buf, i64 %start
  %digest = call i64 %xxh3(ptr %payload, i64 %length64)
  %to_digest = getelementptr i64, ptr %digests, i64 %i
  store i64 %digest, ptr %to_digest
  %next = add i64 %i, 1
  br label %loop
done:
  store i64 %pos, ptr %where
  %all = icmp eq i64 %i, %count
  br i1 %all, label %ok, label %too_few
ok:
  ret i32 0
too_few:
  ret i32 3
count_mismatch:
  store i64 %pos, ptr %where
  ret i32 3
header_cut:
  store i64 %pos, ptr %where
  ret i32 1
payload_cut:
  store i64 %pos, ptr %where
  ret i32 2
}
"""

_LITTLE = """  %run = or i32 %run_le, 0
  %event = or i64 %event_le, 0
  %length = or i32 %length_le, 0"""
_BIG_ENDIAN = """  %run = call i32 @llvm.bswap.i32(i32 %run_le)
  %event = call i64 @llvm.bswap.i64(i64 %event_le)
  %length = call i32 @llvm.bswap.i32(i32 %length_le)"""

_compiled = None
_compiling = threading.Lock()


def _walk_function():
    """The walk as a C function, at its first use: the machine code cached by an earlier process
    (``codecache``: no LLVM loaded), else compiled by llvmlite now and cached for the next."""
    global _compiled
    with _compiling:
        if _compiled is None:
            ir = _WALK_IR.replace("{decode}", _BIG_ENDIAN if sys.byteorder == "big" else _LITTLE)
            key = f"{sys.platform} {os.uname().machine} generic\n{ir}".encode()
            path = codecache.cache_path("walk_records", key)
            address = None if path is None else codecache.load(path, key)
            keep: object = None
            if address is None:
                address, keep = _compile(ir, path, key)
            pointer = ctypes.c_void_p
            function = ctypes.CFUNCTYPE(
                ctypes.c_int32, pointer, ctypes.c_int64, ctypes.c_int64, *[pointer] * 7
            )(address)
            _compiled = (function, keep)
    return _compiled[0]


def _compile(ir: str, path, key: bytes):
    """Compile the walk for this machine's architecture (any CPU of it, so the cached code runs
    on every host sharing the cache); returns its address and what must stay alive for it."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    machine = llvm.Target.from_default_triple().create_target_machine(opt=2)
    module = llvm.parse_assembly(ir)
    module.verify()
    if path is not None:
        code = codecache.function_code(machine.emit_object(module), "walk_records")
        if code is not None:
            codecache.save(path, key, code)
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    return engine.get_function_address("walk_records"), (engine, module)


def walk_records(buf: np.ndarray, expected_count: int):
    """Walk the records of a decompressed block (``buf``: uint8 array) that should hold
    ``expected_count`` of them.

    Returns (status, where, runs, events, payload_offsets, lengths, digests): ``status`` is
    ``WALK_OK`` or the first framing error, ``where`` the byte offset of the failing record (the
    end when all is well); on error the columns are filled only up to the failing record.
    """
    function = _walk_function()
    n = int(expected_count)
    runs = np.zeros(n, dtype=np.uint32)
    events = np.zeros(n, dtype=np.uint64)
    offsets = np.zeros(n, dtype=np.uint64)
    lengths = np.zeros(n, dtype=np.uint32)
    digests = np.zeros(n, dtype=np.uint64)
    where = np.zeros(1, dtype=np.int64)
    buf = np.ascontiguousarray(buf, dtype=np.uint8)
    status = function(
        buf.ctypes.data,
        buf.shape[0],
        n,
        runs.ctypes.data,
        events.ctypes.data,
        offsets.ctypes.data,
        lengths.ctypes.data,
        digests.ctypes.data,
        where.ctypes.data,
        xxh3_64_function_address(),
    )
    return int(status), int(where[0]), runs, events, offsets, lengths, digests


ZSTD_BLOCK_MAX = 1 << 17  # no zstd block holds more than 128 KiB (RFC 8878, Block_Maximum_Size)
FRAME_CUT_SHORT = -1  # a zstd block header or block runs past the end of the bytes
FRAME_BAD_BLOCK = -2  # a reserved block type, or a block over the 128 KiB maximum


def zstd_frame_end(data, start: int) -> int:
    """Where the zstd frame whose first block header is at ``start`` ends (after its last block,
    before an optional content checksum), or ``FRAME_CUT_SHORT`` / ``FRAME_BAD_BLOCK``.

    Only the 3-byte block headers are read (RFC 8878 3.1.1.2): raw and compressed blocks occupy
    their ``Block_Size`` bytes, an RLE block one byte.
    """
    view = memoryview(data).cast("B")
    size = len(view)
    pos = start
    while True:
        if pos + 3 > size:
            return FRAME_CUT_SHORT
        word = int.from_bytes(view[pos : pos + 3], "little")
        last, kind, length = word & 1, (word >> 1) & 3, word >> 3
        pos += 3
        if kind == 3 or length > ZSTD_BLOCK_MAX:
            return FRAME_BAD_BLOCK
        pos += 1 if kind == 1 else length
        if pos > size:
            return FRAME_CUT_SHORT
        if last:
            return pos


assert RECORD_HEADER_SIZE == 16  # the walk hard-codes the record header layout
