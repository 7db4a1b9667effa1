"""Hostile blocks (every digest valid, the contents lying) are refused alike by every decoder.

Issue 10's findings, each reproduced with a file forged by ``fuzz.forge`` (all digests, lengths
and offsets recomputed): a zstd frame declaring far more content than its block header (2^40
bytes) made ``verify --deep``, ``iter_events`` and a ``--skip-bad`` deep merge die of
MemoryError; bytes after the frame (junk, a second frame, a skippable frame) passed
``verify --deep`` and ``iter_events`` but not a deep merge; and a block whose uncompressed
digest field alone was wrong was published by a deep merge that ``verify --deep`` refuses.
Every one must now be one ``DecompressionError``/``ChecksumMismatch`` naming the block, and
``verify --deep``, ``iter_events`` and deep merges (plain and ``--skip-bad``) must agree.
"""

from __future__ import annotations

import struct

import pytest
import zstandard
from fuzz.forge import assemble, dissect

from engine.errors import AllInputsRejected, ChecksumMismatch, DecompressionError, IntegrityError
from engine.format import CODEC_ZSTD
from engine.merge import MergeSpec, merge_files
from engine.readers import open_file
from engine.verify import verify_file


def _frame_declaring(size: int, rle_blocks: int = 3) -> bytes:
    """A zstd frame whose header declares ``size`` content bytes, then a few 128 KiB RLE blocks."""
    header = (
        b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + struct.pack("<Q", size)
    )  # single segment, 8-byte FCS
    block = (1 << 1) | ((1 << 17) << 3)  # RLE, 128 KiB
    blocks = b"".join(
        struct.pack("<I", block | (i == rle_blocks - 1))[:3] + b"\x00" for i in range(rle_blocks)
    )
    return header + blocks


def _second_frame():
    return zstandard.ZstdCompressor().compress(b"x")


SKIPPABLE = b"\x50\x2a\x4d\x18" + struct.pack("<I", 4) + b"skip"
HOSTILE_FRAMES = {  # name: (stored bytes from the block, what the error says)
    "frame declares 2^40 bytes": (
        lambda b: _frame_declaring(1 << 40),
        "zstd frame declares 1099511627776 bytes",
    ),
    "frame declares one byte more": (
        lambda b: _frame_declaring(b.uncompressed_length + 1),
        "zstd frame declares",
    ),
    "frame without content size": (
        lambda b: zstandard.ZstdCompressor(write_content_size=False).compress(b.records),
        "does not declare its content size",
    ),
    "junk after the frame": (lambda b: b.stored + b"junk", "4 bytes follow the zstd frame"),
    "a second frame after the frame": (
        lambda b: b.stored + _second_frame(),
        "bytes follow the zstd frame",
    ),
    "a skippable frame after the frame": (
        lambda b: b.stored + SKIPPABLE,
        "12 bytes follow the zstd frame",
    ),
    "a skippable frame instead": (
        lambda b: SKIPPABLE + b.stored,
        "start with a skippable zstd frame",
    ),
    "frame cut short": (lambda b: b.stored[:-3], "runs past the end"),
    "not zstd at all": (lambda b: b.records, "not a zstd frame"),
}


@pytest.fixture
def sound(tmb_run):
    path = tmb_run[0]
    assert verify_file(path, deep=True, metadata="none").ok
    return path


def _forge(sound, tmp_path, name, mutate):
    parts = dissect(sound)
    block = parts.blocks[1]
    assert block.codec == CODEC_ZSTD
    block.stored = mutate(block)
    path = tmp_path / f"{name.replace(' ', '_').replace('^', '')}.tmb"
    path.write_bytes(assemble(parts))
    return path


def _every_decoder_refuses(path, tmp_path, error_class, message, region="block 1"):
    report = verify_file(path, deep=True, metadata="none")
    assert isinstance(report.error, error_class), report.error
    assert report.error.region == region and message in report.error.message, report.error
    assert verify_file(path, metadata="none").ok  # the fast path never decodes: sound to it
    with open_file(path) as reader, pytest.raises(error_class, match=message):
        for _ in reader.iter_events():
            pass
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    with pytest.raises(error_class, match=message):
        merge_files([path], out / "deep.tmb", MergeSpec(mode="deep", metadata="none", fsync=False))
    with pytest.raises(AllInputsRejected, match=message) as refused:  # the look-ahead's own decode
        merge_files(
            [path],
            out / "skip.tmb",
            MergeSpec(mode="deep", metadata="none", skip_bad=True, fsync=False),
        )
    assert refused.value.exit_code == IntegrityError.exit_code
    assert sorted(p.name for p in out.iterdir()) == []


@pytest.mark.parametrize("name", sorted(HOSTILE_FRAMES))
def test_hostile_zstd_frames_are_refused_by_every_decoder(sound, tmp_path, name):
    mutate, message = HOSTILE_FRAMES[name]
    path = _forge(sound, tmp_path, name, mutate)
    _every_decoder_refuses(path, tmp_path, DecompressionError, message)


def test_deep_merge_refuses_a_block_whose_uncompressed_digest_field_alone_is_wrong(sound, tmp_path):
    parts = dissect(sound)
    parts.blocks[2].uncompressed_digest ^= 1
    path = tmp_path / "digest.tmb"
    path.write_bytes(assemble(parts))
    _every_decoder_refuses(
        path, tmp_path, ChecksumMismatch, "decompressed block digest differs", "block 2"
    )


def test_reassembled_file_is_sound(sound, tmp_path):
    """The forge itself changes nothing: a dissected, reassembled file verifies deep."""
    path = tmp_path / "same.tmb"
    path.write_bytes(assemble(dissect(sound)))
    assert verify_file(path, deep=True, metadata="none").ok
    assert path.read_bytes() == sound.read_bytes()
