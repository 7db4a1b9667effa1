"""Helpers shared by the merge tests: the expected event list of inputs, the check that a
failed merge left its destination folder exactly as it found it, and polling with a deadline."""

import os
import time

from engine.metadata import sidecar_path


def concat_events(read_event_list, paths):
    return [event for path in paths for event in read_event_list(path)]


def assert_nothing_written(out, leftovers):
    """No output, no sidecar, no temporary or lock file in the output's folder."""
    assert not out.exists()
    assert not sidecar_path(out).exists()
    assert leftovers(out.parent) == []
    assert sorted(os.listdir(out.parent)) == [], "the destination folder must stay empty"


def wait_for(condition, *, deadline: float = 60.0, interval: float = 0.002, what: str = "condition"):
    """Poll ``condition`` until it returns something true (returned), or fail after ``deadline`` s."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}: {condition.__doc__ or ''}")
