"""``iter_blocks(window=k, threads=t)``: reading ahead on threads into reused buffers.

The streamed blocks must be exactly the blocks of the plain path, the whole-file adler32 (combined
from per-block checksums computed on the workers) must equal zlib's over the file, a block must stay
intact until ``window`` more blocks have been yielded, and damage must still be reported with the
file and the block, from whichever thread found it.
"""

import zlib

import numpy as np
import pytest

import engine
from engine.checksums import RunningAdler32
from engine.errors import ChecksumMismatch
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


@pytest.mark.parametrize("window,threads", [(1, 1), (2, 2), (5, 3)])
def test_streamed_blocks_equal_the_plain_ones(many_blocks, window, threads):
    with engine.open_file(many_blocks) as reader:
        assert reader.block_count > 20
        plain = [bytes(b.stored) for b in reader.iter_blocks()]
        adler = RunningAdler32()
        streamed = [(b.number, bytes(b.stored)) for b in reader.iter_blocks(adler, window=window, threads=threads)]
    assert [n for n, _ in streamed] == list(range(len(plain)))
    assert [s for _, s in streamed] == plain
    data = many_blocks.read_bytes()
    assert (adler.value, adler.size) == (zlib.adler32(data), len(data))


def test_a_block_stays_intact_for_its_window(many_blocks):
    window = 3
    with engine.open_file(many_blocks) as reader:
        plain = [bytes(b.stored) for b in reader.iter_blocks()]
        held = []
        for block in reader.iter_blocks(window=window, threads=2):
            held.append(block)
            held = held[-(window + 1):]          # the current block and the `window` before it
            for old in held:
                assert bytes(old.stored) == plain[old.number]


def test_damage_is_reported_from_the_reading_thread(many_blocks):
    with engine.open_file(many_blocks) as reader:
        target = reader.blocks[17]
    data = bytearray(many_blocks.read_bytes())
    data[int(target["offset"]) + 48 + 5] ^= 0x40
    many_blocks.write_bytes(bytes(data))
    with engine.open_file(many_blocks) as reader:
        with pytest.raises(ChecksumMismatch) as caught:
            for _ in reader.iter_blocks(window=2, threads=2):
                pass
    assert caught.value.region == "block 17" and caught.value.path == str(many_blocks)
