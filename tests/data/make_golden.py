"""Make the version-1 sample files in tests/data: ``python tests/data/make_golden.py [OUT_DIR]``.

- ``golden_v1.tmb``: 7 events of two runs in 2 blocks, block 0 zstd (level 3) and block 1 stored
  with the ``none`` codec (copied in verbatim, as a merge of a zstd and a ``none`` input would),
  and its SAM sidecar ``golden_v1.tmb.json``.  Its metadata records the libzstd version that
  compressed block 0, because zstd's output may change between libzstd versions.
- ``golden_v1_none.tmb``: the same events, ``none`` codec only, cut by the writer into 2 blocks.
  Its bytes depend on nothing but the format, so they must never change within version 1.

UUIDs and creation times are fixed, so running this again writes byte-identical files;
``tests/test_golden.py`` checks that the writer still does, and that the reader still reads
these files (which are never regenerated once a format version is released).
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import numpy as np
import zstandard

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from engine.blocks import build_block  # noqa: E402
from engine.codecs import NoneCodec  # noqa: E402
from engine.metadata import write_sidecar  # noqa: E402
from engine.writer import TmbWriter  # noqa: E402

MIXED_NAME = "golden_v1.tmb"
NONE_NAME = "golden_v1_none.tmb"
MIXED_UUID = uuid.UUID("d0d0d0d0-2004-4000-8000-000000176852")
NONE_UUID = uuid.UUID("d0d0d0d0-2004-4000-8000-000000176853")
CREATED = "2004-06-15T12:00:00+00:00"
ZSTD_LEVEL = 3
NONE_BLOCK_BYTES = 240   # cuts the 7 events (236 + 68 record bytes) into blocks of 4 and 3

# (run, event, payload): the first 4 are block 0, the last 3 block 1 (one with no payload).
EVENTS = [
    (176852, 1001, b"D0 TMB thumbnail: muon pT=12.5 eta=0.31"),
    (176852, 1002, b"D0 TMB thumbnail: muon pT=8.25 eta=-1.2"),
    (176852, 1005, b"D0 TMB thumbnail: jet ET=40.0 eta=0.05 " * 2),
    (176852, 1007, bytes(range(16))),
    (176853, 3, b""),
    (176853, 4, b"\x00\xff" * 5),
    (176853, 2**40 + 9, b"last event"),
]
FIRST_BLOCK_EVENTS = 4


def libzstd_version() -> str:
    return ".".join(str(part) for part in zstandard.ZSTD_VERSION)


def columns(events):
    runs = np.array([r for r, _, _ in events], dtype=np.uint32)
    numbers = np.array([e for _, e, _ in events], dtype=np.uint64)
    lengths = np.array([len(p) for _, _, p in events], dtype=np.uint32)
    payload = np.frombuffer(b"".join(p for _, _, p in events), dtype=np.uint8)
    return runs, numbers, lengths, payload


def write_mixed(folder: Path):
    """2 blocks: the first through the writer with zstd, the second built uncompressed and copied in."""
    path = folder / MIXED_NAME
    metadata = {"file_name": MIXED_NAME, "created": CREATED, "zstd_version": libzstd_version()}
    with TmbWriter(path, metadata=metadata, codec="zstd", level=ZSTD_LEVEL, file_uuid=MIXED_UUID,
                   overwrite=True, fsync=False) as writer:
        writer.write_batch(*columns(EVENTS[:FIRST_BLOCK_EVENTS]))
        runs, numbers, lengths, payload = columns(EVENTS[FIRST_BLOCK_EVENTS:])
        starts = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.uint64)]).astype(np.uint64)
        built = build_block(runs, numbers, lengths, payload, starts, NoneCodec())
        writer.copy_block(built.header, built.header_bytes + built.data, built.events)
    return writer.result


def write_none(folder: Path):
    """The same events, ``none`` codec, cut into 2 blocks by the writer."""
    path = folder / NONE_NAME
    metadata = {"file_name": NONE_NAME, "created": CREATED}
    with TmbWriter(path, metadata=metadata, codec="none", block_bytes=NONE_BLOCK_BYTES, file_uuid=NONE_UUID,
                   overwrite=True, fsync=False) as writer:
        for run, event, payload in EVENTS:
            writer.write_event(run, event, payload)
    return writer.result


def sidecar_metadata(result) -> dict:
    """The SAM record of a golden file, as a catalogue would hold it."""
    return {
        "file_name": result.path.name,
        "file_size": result.file_size,
        "checksum": [result.checksum],
        "event_count": result.event_count,
        "first_event": result.first_event,
        "last_event": result.last_event,
        "runs": [[run, 1, "physics"] for run in result.runs],
        "data_tier": "thumbnail",
        "file_format": "tmb",
        "create_date": CREATED,
    }


def main(folder: Path = HERE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    mixed = write_mixed(folder)
    write_sidecar(mixed.path, sidecar_metadata(mixed))
    none = write_none(folder)
    for result in (mixed, none):
        print(f"wrote {result.path}: {result.file_size} bytes, {result.block_count} blocks, "
              f"{result.event_count} events, {result.checksum}")
    print(f"block 0 of {mixed.path.name} compressed by libzstd {libzstd_version()}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
