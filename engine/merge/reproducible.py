"""What makes a merge byte-reproducible: a file id derived from content, and timestamps that can be
fixed.

The same inputs merged the same way give the same output and sidecar, byte for byte, when the
timestamps written into them are fixed (reproducible builds' convention, which the field's
release tooling already follows):

- The output's UUID is always derived from what decides its content: the header metadata the
  merge writes (mode, input names, runs, tmbmerge's version) and the inputs' own UUIDs, in
  order.  Two merges of the same inputs in the same mode get the same UUID; anything else a
  different one.  (Before, a random ``uuid4``.)
- Timestamps (the header's ``created``, the sidecar's ``start_time`` and ``end_time``) are the
  wall clock by default, as SAM expects of a merge job.  ``SOURCE_DATE_EPOCH`` (seconds since
  1970, UTC), when set, replaces the clock everywhere (``engine.metadata.now_iso``).  With
  ``MergeSpec(reproducible=True)`` (``--reproducible``) and no ``SOURCE_DATE_EPOCH``, every
  timestamp is the newest ``created`` time among the inputs' headers: a time the inputs fix.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from ..metadata import now_iso, source_date_epoch

# the namespace of tmbmerge's name-based (RFC 4122 version 5) file UUIDs
OUTPUT_NAMESPACE = uuidlib.uuid5(uuidlib.NAMESPACE_URL, "https://tmbmerge/merged-output")


def output_uuid(
    header_metadata: dict[str, Any], input_uuids: Iterable[uuidlib.UUID]
) -> uuidlib.UUID:
    """A name-based UUID (version 5) of the merged file's header metadata and its inputs' UUIDs."""
    name = json.dumps(
        {"header": header_metadata, "inputs": [str(u) for u in input_uuids]},
        sort_keys=True,
        separators=(",", ":"),
    )
    return uuidlib.uuid5(OUTPUT_NAMESPACE, name)


def merge_clock(reproducible: bool, input_created: Iterable[Any]) -> Callable[[], str]:
    """The clock a merge stamps its output with: ``now_iso`` (which honours ``SOURCE_DATE_EPOCH``),
    or, when ``reproducible`` and no ``SOURCE_DATE_EPOCH`` is set, the newest input ``created``
    time."""
    if not reproducible or source_date_epoch() is not None:
        return now_iso
    moments = []
    for value in input_created:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            continue
        if moment.tzinfo is not None:
            moments.append(moment)
    if (
        not moments
    ):  # inputs without a creation time: the epoch, a fixed and obviously synthetic time
        return lambda: "1970-01-01T00:00:00+00:00"
    fixed = max(moments).isoformat(timespec="seconds")
    return lambda: fixed
