"""A catalogue record printed the way ``samweb get-metadata`` prints it, for operators who read
that shape.

``samweb_text(record)``: one ``Label: value`` line per field, labels right-aligned, in SAM's
order (File Name, File Id, Create Date, User, File Type, File Format, File Size, Checksum,
Content Status, Group, Data Tier, Application, Event Count, First Event, Last Event, Start
Time, End Time, Data Stream, Runs, Parents), several values (checksums, runs, parents) on
continuation lines, runs as ``RUN.SUBRUN (run_type)``, then the free-form ``Category.name``
parameters.  (``samweb get-metadata --json`` needs nothing of the kind: records already are
SAM's JSON, which ``catalog show --json`` prints.)
"""

from __future__ import annotations

import json

#: (label, field) in the order samweb prints them.
FIELDS = (
    ("File Name", "file_name"),
    ("File Id", "file_id"),
    ("Create Date", "create_date"),
    ("User", "user"),
    ("File Type", "file_type"),
    ("File Format", "file_format"),
    ("File Size", "file_size"),
    ("Checksum", "checksum"),
    ("Content Status", "content_status"),
    ("Group", "group"),
    ("Data Tier", "data_tier"),
    ("Application", "application"),
    ("Event Count", "event_count"),
    ("First Event", "first_event"),
    ("Last Event", "last_event"),
    ("Start Time", "start_time"),
    ("End Time", "end_time"),
    ("Data Stream", "data_stream"),
    ("Runs", "runs"),
    ("Parents", "parents"),
)
WIDTH = max(len(label) for label, _ in FIELDS)


def _values(field: str, value) -> list[str]:
    if field == "checksum":
        return list(value)
    if field == "application":
        return [" ".join(str(value.get(key, "")) for key in ("family", "name", "version"))]
    if field == "runs":
        return [f"{run}.{subrun:04d} ({run_type})" for run, subrun, run_type in value]
    if field == "parents":
        return [parent["file_name"] for parent in value]
    return [str(value)]


def samweb_text(record: dict) -> str:
    lines = []
    for label, field in FIELDS:
        if field not in record:
            continue
        values = _values(field, record[field]) or [""]
        lines.append(f"{label:>{WIDTH}}: {values[0]}")
        lines.extend(f"{'':>{WIDTH}}  {value}" for value in values[1:])
    known = {field for _, field in FIELDS}
    for key, value in record.items():
        if key not in known:
            shown = value if isinstance(value, (str, int, float)) else json.dumps(value)
            lines.append(f"{key}: {shown}")
    return "\n".join(lines)
