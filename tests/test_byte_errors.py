"""The byte layer's error classes say what differs: a size or a count that is not the one meant
(a merged file's, its blocks read back, a published output's against its journal) is a
``SizeMismatch``, a short block a ``TruncatedFile``, not a ``ChecksumMismatch``; all of them
integrity errors (exit 5)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.blocks import check_stored_block
from engine.checksums import RunningAdler32
from engine.errors import ChecksumMismatch, IntegrityError, SizeMismatch, TruncatedFile
from engine.readers import open_file
from engine.verify.merged import verify_merged_output
from engine.verify.readback import BlocksReadBack
from engine.writer import WriteResult


def _written(path, size: int):
    """What a writer would say it wrote: ``size`` bytes (the adler32 is never reached)."""
    with open_file(path) as reader:
        blocks = reader.block_count
    return WriteResult(path, size, 0, 0, blocks, None, None, None, [])


def test_a_merged_file_of_another_size_is_a_size_mismatch(tmb_run):
    path = tmb_run[0]
    size = path.stat().st_size
    read_back = BlocksReadBack(0, RunningAdler32(), None)
    with pytest.raises(SizeMismatch) as caught:
        verify_merged_output(
            path, expected_events=[], written=_written(path, size + 1), read_back=read_back
        )
    assert isinstance(caught.value, IntegrityError) and caught.value.exit_code == 5
    assert (caught.value.expected, caught.value.actual) == (size + 1, size)
    assert caught.value.path == str(path)


def test_fewer_blocks_read_back_than_the_file_holds_is_a_size_mismatch(tmb_run):
    path = tmb_run[0]
    with open_file(path) as reader:
        blocks, size = reader.block_count, reader.file_size
    read_back = BlocksReadBack(blocks - 1, RunningAdler32(), None)
    with pytest.raises(SizeMismatch, match="blocks read back are not the blocks") as caught:
        verify_merged_output(
            path, expected_events=[], written=_written(path, size), read_back=read_back
        )
    assert (caught.value.expected, caught.value.actual) == (blocks, blocks - 1)


def test_a_stored_block_cut_short_is_a_truncation(tmb_run):
    with open_file(tmb_run[0]) as reader:
        block = reader.read_block(1)
        entry = reader.blocks[1]
    with pytest.raises(TruncatedFile, match="block bytes cut short") as caught:
        check_stored_block(
            block.header, entry, block.data[:-1], region="block 1", offset=block.offset
        )
    assert caught.value.exit_code == 5 and caught.value.region == "block 1"


def test_a_published_output_of_another_size_than_journaled_is_a_size_mismatch(tmb_run):
    from engine.checksums import format_adler32
    from engine.merge.retire import reverify_output
    from engine.verify import verify_file

    path = tmb_run[0]
    check = verify_file(path, metadata="none")
    journaled = SimpleNamespace(file_size=check.file_size + 1, checksum=format_adler32(1))
    with pytest.raises(SizeMismatch, match="not the one journaled") as caught:
        reverify_output(path, journaled)
    assert caught.value.exit_code == 5
    same_size = SimpleNamespace(file_size=check.file_size, checksum=format_adler32(1))
    with pytest.raises(ChecksumMismatch, match="not the one journaled"):
        reverify_output(path, same_size)
