"""Per-core and all-core costs of the bytes a merge handles: checksums and the zstd codec.

Measured on real TMB blocks of the benchmark run (their stored bytes, and the record bytes they
decompress to), so the figures describe this data, not a synthetic buffer:

- xxh3-64 (block and payload digests), adler32 with zlib-ng (the catalogue checksum) and with
  stdlib zlib for reference, zstd compression at the writer's level and zstd decompression, each
  on one thread: bytes hashed or fed in per second, the loop repeated until it has run at least
  ``min_seconds`` so that small samples still give stable figures;
- zstd decompression of a set of blocks on ``threads`` threads (zstd releases the GIL), the
  all-core figure deep mode is compared with.

Functions return ``{"seconds", "bytes", ...}``: ``bytes`` is what was fed in (stored bytes for
decompression, record bytes for hashing and compression).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from ..checksums import xxh3_64
from ..codecs import DEFAULT_ZSTD_LEVEL, ZstdCodec
from ..format import CODEC_ZSTD


class StoredBlock(NamedTuple):
    """One block's stored bytes and its uncompressed length: what the codec figures decode."""

    data: bytes  # stored (compressed) bytes
    length: int  # uncompressed length


def load_blocks(paths, *, limit_bytes: int | None = None) -> list[StoredBlock]:
    """The zstd blocks of ``paths`` as stored, in order, until ``limit_bytes`` stored bytes are
    held."""
    from ..readers import open_file

    blocks: list[StoredBlock] = []
    held = 0
    for path in paths:
        with open_file(path) as reader:
            for block in reader.iter_blocks():
                if block.header.codec != CODEC_ZSTD:
                    continue
                blocks.append(StoredBlock(block.data, block.header.uncompressed_length))
                held += len(block.data)
                if limit_bytes is not None and held >= limit_bytes:
                    return blocks
    return blocks


def decompress_blocks(blocks: list[StoredBlock], *, threads: int) -> dict:
    """Decompress every block once on ``threads`` threads (in order, results dropped as they
    come)."""
    codec = ZstdCodec()
    stored = sum(len(b.data) for b in blocks)
    produced = sum(b.length for b in blocks)

    def one(block: StoredBlock) -> int:
        return len(codec.decompress(block.data, block.length))

    started = time.perf_counter()
    if threads <= 1:
        for block in blocks:
            one(block)
    else:
        with ThreadPoolExecutor(threads, thread_name_prefix="bench-zstd") as pool:
            for _ in pool.map(one, blocks):
                pass
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "bytes": stored,
        "uncompressed_bytes": produced,
        "threads": threads,
        "blocks": len(blocks),
    }


def _repeat(work: Callable[[], None], nbytes: int, min_seconds: float) -> dict:
    """Run ``work`` (one pass over ``nbytes``) until ``min_seconds`` have gone by."""
    passes = 0
    started = time.perf_counter()
    while True:
        work()
        passes += 1
        seconds = time.perf_counter() - started
        if seconds >= min_seconds:
            return {"seconds": seconds, "bytes": nbytes * passes, "passes": passes}


def per_core(blocks: list[StoredBlock], *, min_seconds: float = 0.3) -> dict[str, dict]:
    """One-thread rates of every checksum and codec step, on ``blocks`` and their records."""
    from zlib_ng import zlib_ng

    codec = ZstdCodec()
    records = [codec.decompress(b.data, b.length).data for b in blocks]  # as buffers
    record_bytes = sum(len(r) for r in records)
    stored_bytes = sum(len(b.data) for b in blocks)
    compressor = codec._compressor()

    def hash_xxh3():
        for r in records:
            xxh3_64(r)

    def adler_ng():
        value = 1
        for r in records:
            value = zlib_ng.adler32(r, value)

    def adler_zlib():
        value = 1
        for r in records:
            value = zlib.adler32(r, value)

    def compress():
        for r in records:
            compressor.compress(r)

    def decompress():
        for b in blocks:
            codec.decompress(b.data, b.length)

    out = {
        "xxh3": _repeat(hash_xxh3, record_bytes, min_seconds),
        "adler32_zlib_ng": _repeat(adler_ng, record_bytes, min_seconds),
        "adler32_zlib": _repeat(adler_zlib, record_bytes, min_seconds),
        "zstd_compress": _repeat(compress, record_bytes, min_seconds),
        "zstd_decompress": _repeat(decompress, stored_bytes, min_seconds),
    }
    out["zstd_compress"]["level"] = DEFAULT_ZSTD_LEVEL
    out["zstd_decompress"]["uncompressed_bytes"] = (
        out["zstd_decompress"]["bytes"] * record_bytes // max(1, stored_bytes)
    )
    for figure in out.values():
        figure["sample_bytes"] = record_bytes
        figure["sample_blocks"] = len(blocks)
    return out
