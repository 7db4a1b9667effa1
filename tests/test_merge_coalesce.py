"""Small blocks are joined in the output; normal ones are copied verbatim; every check still holds.

A merge of many tiny inputs used to give one tiny block per input.  Blocks under
``pipeline.COALESCE_BELOW`` are now decoded (digests and events checked before their bytes reach
the output) and joined with their small neighbours into blocks of the writer's target size.
"""

from __future__ import annotations

import pytest

from engine.errors import ChecksumMismatch
from engine.format import BLOCK_HEADER_SIZE
from engine.merge import MergeSpec, merge_files
from engine.merge.pipeline import COALESCE_BELOW
from engine.readers import open_file
from engine.verify import verify_file


def _tiny_inputs(folder, factory, count):
    return [
        factory(
            folder / f"tmb_0000178000_p{i:03d}.tmb",
            partition=i,
            first_event=1000 * i + 1,
            n_events=4,
            mean_event_kb=0.5,
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("mode", ["fast", "safe", "deep"])
def test_tiny_inputs_give_few_full_blocks(tmp_path, tmb_file_factory, read_event_list, mode):
    inputs = [f.path for f in _tiny_inputs(tmp_path / "in", tmb_file_factory, 120)]
    with open_file(inputs[0]) as reader:
        assert reader.block_count == 1 and reader.blocks["uncompressed_length"][0] < COALESCE_BELOW
    out = tmp_path / "m.tmb"
    report = merge_files(inputs, out, MergeSpec(mode=mode))
    assert report.block_count == 1 and report.event_count == 480
    assert read_event_list(out) == [e for path in inputs for e in read_event_list(path)]
    checked = verify_file(out, deep=True, metadata="auto")
    assert checked.error is None and checked.block_count == 1


def test_normal_blocks_stay_verbatim(tmb_run, out_dir):
    """Blocks of the usual size are the input's stored bytes exactly (same stored-bytes digest),
    and a lone small last block too."""
    out = out_dir / "m.tmb"
    merge_files(tmb_run[:3], out, MergeSpec(mode="safe"))
    expected = []
    for path in tmb_run[:3]:
        with open_file(path) as reader:
            expected += reader.blocks["compressed_digest"].tolist()
    with open_file(out) as merged:
        assert merged.blocks["compressed_digest"].tolist() == expected


def test_a_damaged_small_block_is_refused_before_it_is_joined(
    tmp_path, tmb_file_factory, leftovers
):
    inputs = [f.path for f in _tiny_inputs(tmp_path / "in", tmb_file_factory, 5)]
    with open_file(inputs[2]) as reader:
        where = int(reader.blocks["offset"][0]) + BLOCK_HEADER_SIZE + 10
    data = bytearray(inputs[2].read_bytes())
    data[where] ^= 0x01
    inputs[2].write_bytes(bytes(data))
    out = tmp_path / "m.tmb"
    with pytest.raises(ChecksumMismatch) as caught:
        merge_files(inputs, out, MergeSpec(mode="fast"))
    assert caught.value.path == str(inputs[2]) and caught.value.region == "block 0"
    assert not out.exists() and leftovers(tmp_path) == []
