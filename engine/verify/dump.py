"""What ``tmbmerge dump`` shows about one file: a JSON-ready summary, and text or JSON streams of
it.

Strategy: ``summarize_file`` turns an open reader into a plain dict (header, metadata, block
table, index location, totals).  Everything in it comes from the structures the reader has
already validated at open time, plus one sequential read of the whole file for its adler32;
no block is decompressed and no event is touched in Python.  The per-event listing comes
from the index columns, a chunk of events at a time, through generators
(``iter_event_rows``, ``iter_dump_text``, ``iter_dump_json``), so dumping a file of millions
of events never builds one huge string or list; the only per-event Python work is formatting
the lines the user asked for.

``dump`` is an inspection tool, not a verifier: the stored bytes of blocks are not checked
here (that is ``verify_file``'s job), so a file whose blocks are damaged but whose header,
metadata, index and trailer are sound can still be dumped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..checksums import RunningAdler32, adler32_hex, digest_hex
from ..codecs import codec_name
from ..format import HEADER_MAGIC, EventTable
from ..remote import is_url

READ_CHUNK = 4 << 20  # bytes per read when computing the whole file's adler32
EVENT_CHUNK = 1 << 16  # events converted from numpy columns at a time


def ratio(uncompressed: int, compressed: int) -> float | None:
    """Compression ratio (uncompressed / stored), rounded for display; None when undefined."""
    return round(uncompressed / compressed, 3) if compressed else None


def file_adler32(path) -> tuple[int, int]:
    """(adler32, size) of every byte of ``path``, read sequentially in large chunks."""
    running = RunningAdler32()
    if is_url(path):
        from ..source import open_source

        source = open_source(path)
        try:
            chunks = [
                (offset, min(READ_CHUNK, source.size - offset))
                for offset in range(0, source.size, READ_CHUNK)
            ]
            source.will_need(chunks)
            for offset, length in chunks:
                running.update(source.pread(length, offset))
        finally:
            source.close()
        return running.value, running.size
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            running.update(view[:n])
    return running.value, running.size


def summarize_blocks(blocks: np.ndarray) -> list[dict[str, Any]]:
    """The block table as a list of dicts (blocks are few: one per few MiB of events)."""
    rows = []
    columns = {
        name: blocks[name].tolist()
        for name in (
            "offset",
            "codec",
            "compressed_length",
            "uncompressed_length",
            "event_count",
            "first_event",
            "compressed_digest",
            "uncompressed_digest",
        )
    }
    for number in range(len(blocks)):
        clen, ulen = columns["compressed_length"][number], columns["uncompressed_length"][number]
        codec = columns["codec"][number]
        rows.append(
            {
                "number": number,
                "offset": columns["offset"][number],
                "codec": codec_name(codec),
                "compressed_length": clen,
                "uncompressed_length": ulen,
                "ratio": ratio(ulen, clen),
                "event_count": columns["event_count"][number],
                "first_event_index": columns["first_event"][number],
                "compressed_digest": digest_hex(columns["compressed_digest"][number]),
                "uncompressed_digest": digest_hex(columns["uncompressed_digest"][number]),
            }
        )
    return rows


def summarize_file(reader) -> dict[str, Any]:
    """Header, metadata, block table, index location and totals of an open reader's file."""
    header, trailer, blocks, events = reader.header, reader.trailer, reader.blocks, reader.events
    adler, size = file_adler32(reader.path)
    stored = int(blocks["compressed_length"].sum(dtype=np.int64))
    raw = int(blocks["uncompressed_length"].sum(dtype=np.int64))
    has_events = len(events) > 0
    return {
        "file": str(reader.path),
        "header": {
            "magic": HEADER_MAGIC.hex(),
            "version": header.version,
            "uuid": str(header.uuid),
            "metadata_length": header.metadata_length,
        },
        "metadata": reader.metadata,
        "blocks": summarize_blocks(blocks),
        "index": {
            "offset": trailer.index_offset,
            "length": trailer.index_length,
            "digest": digest_hex(trailer.index_digest),
        },
        "totals": {
            "file_size": size,
            "blocks": int(trailer.block_count),
            "events": int(trailer.event_count),
            "first_event": int(events.event.min()) if has_events else None,
            "last_event": int(events.event.max()) if has_events else None,
            "runs": np.unique(events.run).tolist(),
            "stored_bytes": stored,
            "uncompressed_bytes": raw,
            "compression_ratio": ratio(raw, stored),
            "adler32": adler32_hex(adler),
        },
    }


def iter_event_rows(
    events: EventTable, *, chunk: int = EVENT_CHUNK
) -> Iterator[tuple[int, int, int, str, int]]:
    """(run, event, size, digest hex, block) for every event in file order, from the index
    columns."""
    for start in range(0, len(events), chunk):
        part = events.slice(start, start + chunk)
        yield from zip(
            part.run.tolist(),
            part.event.tolist(),
            part.length.tolist(),
            (f"{d:016x}" for d in part.digest.tolist()),
            part.block.tolist(),
            strict=True,
        )


# ---------------------------------------------------------------------------------------------
# Text


def iter_dump_text(summary: dict[str, Any], events: EventTable | None = None) -> Iterator[str]:
    """The human-readable dump, one line (without newline) at a time; events only when given."""
    header, totals = summary["header"], summary["totals"]
    yield f"file             {summary['file']}"
    yield f"magic            {header['magic']}"
    yield f"format version   {header['version']}"
    yield f"uuid             {header['uuid']}"
    yield f"metadata length  {header['metadata_length']} bytes"
    yield ""
    yield "metadata"
    for line in json.dumps(summary["metadata"], indent=2, sort_keys=True).splitlines():
        yield f"  {line}"
    yield ""
    yield f"blocks ({len(summary['blocks'])})"
    yield (
        f"  {'#':>6} {'offset':>14} {'codec':<5} {'stored':>11} {'uncompressed':>12} {'ratio':>7} "
        f"{'events':>8}  {'stored digest':<16}  uncompr. digest"
    )
    for b in summary["blocks"]:
        shown = "-" if b["ratio"] is None else f"{b['ratio']:.3f}"
        yield (
            f"  {b['number']:>6} {b['offset']:>14} {b['codec']:<5} {b['compressed_length']:>11} "
            f"{b['uncompressed_length']:>12} {shown:>7} {b['event_count']:>8}  "
            f"{b['compressed_digest']}  {b['uncompressed_digest']}"
        )
    index = summary["index"]
    yield ""
    yield (
        f"index            offset {index['offset']}, {index['length']} bytes, digest "
        f"{index['digest']}"
    )
    yield ""
    yield "totals"
    ratio_text = (
        "-" if totals["compression_ratio"] is None else f"{totals['compression_ratio']:.3f}"
    )
    runs = ", ".join(str(r) for r in totals["runs"]) or "-"
    yield f"  file size      {totals['file_size']} bytes"
    yield f"  blocks         {totals['blocks']}"
    yield f"  events         {totals['events']}"
    yield f"  first event    {_or_dash(totals['first_event'])}"
    yield f"  last event     {_or_dash(totals['last_event'])}"
    yield f"  runs           {runs}"
    yield (
        f"  compression    {ratio_text} ({totals['uncompressed_bytes']} bytes of records stored in "
        f"{totals['stored_bytes']})"
    )
    yield f"  adler32        {totals['adler32']}"
    if events is not None:
        yield ""
        yield f"events ({len(events)})"
        yield f"  {'run':>10} {'event':>20} {'size':>10}  {'digest':<16} {'block':>8}"
        for run, event, size, digest, block in iter_event_rows(events):
            yield f"  {run:>10} {event:>20} {size:>10}  {digest} {block:>8}"


def _or_dash(value) -> str:
    return "-" if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# JSON


def iter_dump_json(summary: dict[str, Any], events: EventTable | None = None) -> Iterator[str]:
    """The summary as one JSON object, in pieces; with ``events`` it also holds an ``events`` list
    of {run, event, size, digest, block} objects, streamed one object per piece.
    """
    if events is None:
        yield json.dumps(summary, indent=2)
        yield "\n"
        return
    head = json.dumps(summary, indent=2)
    yield head[: head.rindex("}")].rstrip()
    yield ',\n  "events": ['
    separator = "\n    "
    for run, event, size, digest, block in iter_event_rows(events):
        yield (
            f'{separator}{{"run": {run}, "event": {event}, "size": {size}, "digest": "{digest}", '
            f'"block": {block}}}'
        )
        separator = ",\n    "
    yield "\n  ]\n}\n" if len(events) else "]\n}\n"
