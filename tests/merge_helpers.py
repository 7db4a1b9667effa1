"""Helpers shared by the merge tests: the expected event list of inputs, the check that a
failed merge left its destination folder exactly as it found it, damaging one stored byte of a
block, and polling with a deadline."""

import os
import time

from engine.metadata import sidecar_path


def concat_events(read_event_list, paths):
    return [event for path in paths for event in read_event_list(path)]


def flip_payload_byte(path, block: int) -> int:
    """XOR one byte in the middle of ``block``'s stored data; returns its offset."""
    import engine
    from engine.format import BLOCK_HEADER_SIZE

    with engine.open_file(path) as reader:
        assert reader.block_count > block, "the fixture's files must have several blocks"
        entry = reader.blocks[block]
        offset = int(entry["offset"]) + BLOCK_HEADER_SIZE + int(entry["compressed_length"]) // 2
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0xFF]))
    return offset


def assert_nothing_written(out, leftovers):
    """No output, no sidecar, no temporary or lock file in the output's folder."""
    assert not out.exists()
    assert not sidecar_path(out).exists()
    assert leftovers(out.parent) == []
    assert sorted(os.listdir(out.parent)) == [], "the destination folder must stay empty"


def wait_for(
    condition, *, deadline: float = 60.0, interval: float = 0.002, what: str = "condition"
):
    """Poll ``condition`` until it returns something true (returned), or fail after
    ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}: {condition.__doc__ or ''}")
