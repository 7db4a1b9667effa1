"""``check_blocks``: verification reading, several threads, a few reused buffers.

It must accept exactly what ``iter_blocks`` accepts, give the same headers in order, the same
whole-file adler32 (combined from per-block checksums computed on the workers) as zlib over the
file, and report damage with the file and the block from whichever thread found it.
"""

import zlib

import numpy as np
import pytest

import engine
from engine.checksums import RunningAdler32
from engine.errors import ChecksumMismatch, TruncatedFile
from engine.writer import TmbWriter


@pytest.fixture
def many_blocks(tmp_path):
    path = tmp_path / "many.tmb"
    rng = np.random.default_rng(5)
    lengths = rng.integers(100, 3000, 600).astype(np.uint32)
    payloads = rng.integers(0, 40, int(lengths.sum()), dtype=np.uint8)
    with TmbWriter(path, block_bytes=20_000) as writer:
        writer.write_batch(np.full(600, 7), np.arange(600), lengths, payloads)
    return path


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_checked_blocks_equal_the_plain_ones(many_blocks, threads):
    with engine.open_file(many_blocks) as reader:
        assert reader.block_count > 20
        plain = [b.header for b in reader.iter_blocks()]
        adler = RunningAdler32()
        checked = list(reader.check_blocks(adler, threads=threads))
    assert checked == plain
    data = many_blocks.read_bytes()
    assert (adler.value, adler.size) == (zlib.adler32(data), len(data))


def test_damage_is_reported_from_the_checking_thread(many_blocks):
    with engine.open_file(many_blocks) as reader:
        target = reader.blocks[17]
    data = bytearray(many_blocks.read_bytes())
    data[int(target["offset"]) + 48 + 5] ^= 0x40
    many_blocks.write_bytes(bytes(data))
    with engine.open_file(many_blocks) as reader:
        with pytest.raises(ChecksumMismatch) as caught:
            for _ in reader.check_blocks(threads=2):
                pass
    assert caught.value.region == "block 17" and caught.value.path == str(many_blocks)


def test_a_file_cut_after_it_was_opened(many_blocks):
    """The file shrinks between open and reading (a writer truncating it): a clean truncation
    error."""
    with engine.open_file(many_blocks) as reader:
        cut = int(reader.blocks[9]["offset"]) + 100
        with open(many_blocks, "r+b") as f:
            f.truncate(cut)
        with pytest.raises(TruncatedFile) as caught:
            for _ in reader.check_blocks(threads=2):
                pass
    assert caught.value.region == "block 9"


def test_iter_blocks_gives_each_block_its_adler32(many_blocks):
    """With a running adler32, each block carries the checksum of its own bytes (what the merge's
    writer combines instead of hashing again), and the running one is the whole file's."""
    with engine.open_file(many_blocks) as reader:
        adler = RunningAdler32()
        blocks = [(b.adler32, zlib.adler32(bytes(b.stored))) for b in reader.iter_blocks(adler)]
        assert all(b.adler32 is None for b in reader.iter_blocks())  # nothing computed unasked
    assert len(blocks) > 20 and all(carried == computed for carried, computed in blocks)
    data = many_blocks.read_bytes()
    assert (adler.value, adler.size) == (zlib.adler32(data), len(data))
