"""The copyd0om way of merging, kept as deep mode's comparison: decode every event, write it anew.

The safe tool of 2005 read every event of every input and wrote it into the output one event
at a time.  Here that is ``iter_events()`` on each input (decompress, check every digest) into
``TmbWriter.write_event`` (re-frame, re-digest, re-compress at the writer's default level on
one thread, as the old tool did).  Deep mode checks the same things without re-encoding, so
the ratio between the two is what copying verified blocks saves.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..writer import TmbWriter


def reencode_files(inputs, output, *, fsync: bool = True) -> dict:
    """Merge ``inputs`` into ``output`` by decoding and re-encoding every event.  ``bytes`` counts
    input."""
    from ..readers import open_file

    inputs = [Path(p) for p in inputs]
    started = time.perf_counter()
    events = 0
    with TmbWriter(
        output,
        metadata={"merge": {"mode": "reencode", "inputs": [p.name for p in inputs]}},
        fsync=fsync,
    ) as writer:
        for path in inputs:
            with open_file(path) as reader:
                for event in reader.iter_events():
                    writer.write_event(event.run, event.event, event.payload)
                    events += 1
        result = writer.close()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "bytes": sum(p.stat().st_size for p in inputs),
        "events": events,
        "output_bytes": result.file_size,
    }
