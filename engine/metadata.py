"""SAM metadata of TMB files: sidecars, validation, crosscheck facts and merged-file metadata.

Every TMB file travels with a JSON record in the SAM catalogue's own field names (see
docs/CATALOG.md): beside the file as a *sidecar* (``<file>.json``), in the catalogue, and as
the merged file's description written by a merge.  This module is the one place that knows
those fields.

Strategy: ``normalize_metadata`` is the gate.  It checks the type of every known field, turns
legacy forms into the one canonical form (``enstore:<decimal>`` checksums become
``adler32:<8 lowercase hex>``, ISO 8601 times are rewritten by ``datetime.isoformat``, run
tuples become lists, bare parent names become ``{"file_name": ...}``) and returns a new dict,
so that everything downstream (catalogue backends, crosschecks, the merge) compares like with
like.  It raises ``MetadataError`` with a one-line message naming the field.  The other
functions build on it: ``expected_facts`` for crosschecks, ``check_agreement`` and
``merged_metadata`` for a merge.

Fields are SAM's: unknown top-level names are rejected (SAM rejects them too, and a typo such
as ``event_cout`` must not pass silently) unless they are free-form parameters, which SAM
spells ``Category.name`` (``Merge.mode``).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from .checksums import ADLER_MOD, adler32_from_checksums, format_adler32
from .errors import InconsistentInputs, InputError, MetadataError, MetadataMismatch, input_error
from .fsutil import write_atomically
from .host import iso_now
from .remote import location
from .safejson import parse_json

SIDECAR_SUFFIX = ".json"
#: A sidecar is a few kB (a merged file's lists its parents: ~60 bytes each); anything over
#: this is refused before it is read.
MAX_SIDECAR_BYTES = 4 << 20
#: A file name is one path component: at most 255 bytes on every file system we write to.
MAX_FILE_NAME_BYTES = 255

#: Top-level SAM fields holding a plain string.
STRING_FIELDS = (
    "file_type",
    "file_format",
    "file_partition",
    "data_tier",
    "data_stream",
    "content_status",
    "group",
    "user",
    "create_date",
    "create_user",
    "update_date",
    "update_user",
    "retire_date",
)
#: Top-level SAM fields holding an integer.
INTEGER_FIELDS = ("file_id", "file_size", "event_count", "first_event", "last_event")
#: Top-level SAM fields with a structure of their own.
STRUCTURED_FIELDS = (
    "file_name",
    "checksum",
    "runs",
    "parents",
    "application",
    "start_time",
    "end_time",
)
KNOWN_FIELDS = frozenset(STRING_FIELDS + INTEGER_FIELDS + STRUCTURED_FIELDS)
APPLICATION_FIELDS = ("family", "name", "version")

#: Keys whose values must be the same in every input of a merge ("application.version" is the
#: ``version`` of ``application``; "run_type" is the third element of every ``runs`` entry).
#: ``data_stream`` counts only when some input has it; then every input must have the same.
AGREEING_KEYS = (
    "data_tier",
    "file_format",
    "application.family",
    "application.name",
    "application.version",
    "run_type",
    "data_stream",
)
#: Keys carried into merged metadata when all inputs agree, and dropped (not an error) otherwise.
CARRIED_KEYS = ("group", "file_type")


class FileFacts(NamedTuple):
    """What was measured of a file, or what its metadata says of it (None: not stated).

    ``source`` says where stated facts come from ("sidecar", "catalogue"): the crosschecks'
    messages name it ("adler32 differs from the sidecar").
    """

    file_size: int | None
    adler32: int | None
    event_count: int | None
    file_name: str | None = None
    runs: tuple[int, ...] | None = None  # the run numbers, sorted, each once
    first_event: int | None = None  # the lowest event number
    last_event: int | None = None  # the highest
    source: str = "metadata"


# --- sidecars -----------------------------------------------------------------------------


def sidecar_path(data_path: str | os.PathLike) -> Path:
    """The sidecar of ``data_path``: the same name with ``.json`` appended, in the same
    directory."""
    path = location(data_path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_sidecar(data_path: str | os.PathLike) -> dict | None:
    """The sidecar of ``data_path`` as a dict, or None when there is none.

    The sidecar must be a regular file (a symlink to one is fine) of at most
    ``MAX_SIDECAR_BYTES``: it is opened without blocking (a FIFO would hang every command),
    checked with ``fstat`` (a device such as ``/dev/zero`` would be read for ever) and its size
    bounded before a byte is read.  The JSON is parsed with limits (``safejson``).  Any problem
    is a ``MetadataError`` or ``InputError`` naming the sidecar; the content is not validated
    here (see ``load_sidecar`` and ``normalize_metadata``).
    """
    path = sidecar_path(data_path)
    data = _read_local_sidecar(path) if isinstance(path, Path) else _read_remote_sidecar(path)
    if data is None:
        return None
    try:
        metadata = parse_json(data, what="sidecar")
    except MetadataError as exc:
        raise exc.with_path(path) from None
    if not isinstance(metadata, dict):
        raise MetadataError(
            f"sidecar holds a JSON {type(metadata).__name__}, not an object", path=path
        )
    return metadata


def load_sidecar(data_path: str | os.PathLike) -> dict | None:
    """The sidecar of ``data_path`` validated and in canonical form (``normalize_metadata``,
    unknown fields refused), or None when there is none: what ``verify`` and ``merge`` both use,
    so they accept exactly the same sidecars.  Errors name the sidecar."""
    md = read_sidecar(data_path)
    if md is None:
        return None
    try:
        return normalize_metadata(md)
    except MetadataError as exc:
        raise exc.with_path(sidecar_path(data_path)) from None


def _read_local_sidecar(path: Path) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise input_error(exc, path, "read sidecar") from None
    try:
        _check_sidecar_stat(os.fstat(fd), path)
        data = _read_at_most(fd, MAX_SIDECAR_BYTES + 1)
    except OSError as exc:
        raise input_error(exc, path, "read sidecar") from None
    finally:
        os.close(fd)
    if len(data) > MAX_SIDECAR_BYTES:  # it grew since fstat
        raise MetadataError(f"sidecar is more than {MAX_SIDECAR_BYTES} bytes", path=path)
    return data


def _read_remote_sidecar(path) -> bytes | None:
    """A sidecar named by URL: its size and kind asked of the server before it is read."""
    try:
        _check_sidecar_stat(path.stat(), path)
    except FileNotFoundError:
        return None
    data = path.read_bytes()
    if len(data) > MAX_SIDECAR_BYTES:
        raise MetadataError(f"sidecar is more than {MAX_SIDECAR_BYTES} bytes", path=path)
    return data


def _check_sidecar_stat(info, path) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = (
            "FIFO"
            if stat.S_ISFIFO(info.st_mode)
            else "directory"
            if stat.S_ISDIR(info.st_mode)
            else "socket"
            if stat.S_ISSOCK(info.st_mode)
            else "device"
        )
        raise InputError(f"sidecar is a {kind}, not a regular file", path=path)
    if info.st_size > MAX_SIDECAR_BYTES:
        raise MetadataError(
            f"sidecar is {info.st_size} bytes, more than {MAX_SIDECAR_BYTES}", path=path
        )


def _read_at_most(fd: int, limit: int) -> bytes:
    parts, size = [], 0
    while size < limit:
        chunk = os.read(fd, min(limit - size, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def write_sidecar(data_path: str | os.PathLike, metadata: dict) -> Path:
    """Write ``metadata`` as the sidecar of ``data_path`` atomically, and return the sidecar's path.

    The JSON goes to a temporary file in the same directory, is fsynced, and is renamed over
    the sidecar, so a reader sees the old sidecar or the new one, never half of one.
    """
    path = sidecar_path(data_path)
    write_atomically(path, sidecar_bytes(metadata))
    return path


def sidecar_bytes(metadata: dict) -> bytes:
    """A sidecar's exact bytes: indented JSON, sorted keys, UTF-8, one final newline."""
    return (json.dumps(metadata, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


# --- validation ---------------------------------------------------------------------------


def normalize_metadata(md: Any, *, file_size: int | None = None, strict: bool = True) -> dict:
    """Validate SAM metadata and return a new dict in canonical form.

    ``file_name`` is required; every other known field is checked when present.  ``file_size``
    (argument) is used to convert ``enstore`` checksums when the dict has no ``file_size``; when
    both are given they must be equal (else ``MetadataMismatch``).  Unknown field names are an
    error when ``strict`` (sidecars, declarations) and kept as they are otherwise (records read
    back from a catalogue that knows more fields than this module).  Raises ``MetadataError``
    naming the first bad field.
    """
    if not isinstance(md, dict):
        raise MetadataError(f"metadata must be a JSON object, not {type(md).__name__}")
    out: dict[str, Any] = {}
    for key, value in md.items():
        if not isinstance(key, str):
            raise MetadataError(f"metadata key {key!r} is not a string")
        if strict and key not in KNOWN_FIELDS and not _is_parameter_name(key):
            raise MetadataError(
                f"{key}: not a SAM metadata field (free-form parameters are named Category.name)"
            )
        out[key] = value

    if "file_name" not in out:
        raise MetadataError("file_name: missing")
    out["file_name"] = _file_name(out["file_name"], "file_name")
    for key in STRING_FIELDS:
        if key in out:
            out[key] = _string(out[key], key)
    for key in INTEGER_FIELDS:
        if key in out:
            unsigned = key in ("first_event", "last_event")  # event numbers are u64 in a TMB file
            out[key] = _integer(
                out[key],
                key,
                minimum=0 if key in ("file_size", "event_count", "file_id") else None,
                bits=64 if unsigned else 63,
            )
    if file_size is not None:
        file_size = _integer(file_size, "file_size", minimum=0)
        if out.get("file_size", file_size) != file_size:
            raise MetadataMismatch(
                f"file_size: metadata of {out['file_name']} disagrees with the file",
                expected=out["file_size"],
                actual=file_size,
            )
    if "first_event" in out and "last_event" in out and out["first_event"] > out["last_event"]:
        raise MetadataError(
            f"first_event: {out['first_event']} is after last_event {out['last_event']}"
        )
    if "checksum" in out:
        out["checksum"] = _checksums(out["checksum"], out.get("file_size", file_size))
    if "runs" in out:
        out["runs"] = normalize_runs(out["runs"])
    if "parents" in out:
        out["parents"] = _parents(out["parents"])
    if "application" in out:
        out["application"] = _application(out["application"])
    for key in ("start_time", "end_time"):
        if key in out:
            out[key] = _iso_time(out[key], key)
    if "start_time" in out and "end_time" in out:
        if datetime.fromisoformat(out["start_time"]) > datetime.fromisoformat(out["end_time"]):
            raise MetadataError(
                f"start_time: {out['start_time']} is after end_time {out['end_time']}"
            )
    return out


def normalize_runs(runs: Any) -> list[list]:
    """Validate a SAM ``runs`` list and return it as a list of ``[run, subrun, run_type]`` lists."""
    if not isinstance(runs, (list, tuple)):
        raise MetadataError(
            f"runs: must be a list of [run, subrun, run_type], not {type(runs).__name__}"
        )
    out = []
    for index, entry in enumerate(runs):
        where = f"runs[{index}]"
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            raise MetadataError(f"{where}: must be [run, subrun, run_type], not {entry!r}")
        run, subrun, run_type = entry
        out.append(
            [
                _integer(run, where, minimum=0),
                _integer(subrun, where, minimum=0),
                _string(run_type, where),
            ]
        )
    return out


def _is_parameter_name(key: str) -> bool:
    category, dot, name = key.partition(".")
    return bool(dot and category and name)


def _string(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise MetadataError(f"{field}: must be a string, not {_shown_value(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no sidecar, catalogue row or name can hold it
        raise MetadataError(f"{field}: holds a lone surrogate, not Unicode text") from None
    return value


def _shown_value(value: Any) -> str:
    """``repr(value)`` cut to one short line (an integer too long to print is described)."""
    try:
        text = repr(value)
    except ValueError:
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= 80 else text[:77] + "..."


def _file_name(value: Any, field: str) -> str:
    value = _string(value, field)
    if not value or "/" in value or "\0" in value or value in (".", ".."):
        raise MetadataError(
            f"{field}: {value!r} is not a file name (a catalogue name has no directory)"
        )
    if len(value.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME_BYTES:
        raise MetadataError(
            f"{field}: a file name of {len(value)} characters (at most {MAX_FILE_NAME_BYTES} bytes)"
        )
    return value


def _integer(value: Any, field: str, *, minimum: int | None = None, bits: int = 63) -> int:
    """An integer of at most ``bits`` bits and sign (63: a signed 64-bit value; 64: unsigned)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise MetadataError(f"{field}: must be an integer, not {_shown_value(value)}")
    if not -(2**63) <= value < 2**bits:
        raise MetadataError(f"{field}: {_shown_value(value)} does not fit in 64 bits")
    if minimum is not None and value < minimum:
        raise MetadataError(f"{field}: must be at least {minimum}, not {value}")
    return value


def _checksums(value: Any, file_size: int | None) -> list[str]:
    """One ``adler32:<8 hex>`` entry (from adler32 or enstore forms) first, other algorithms
    after."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise MetadataError(f"checksum: must be a list of strings, not {value!r}")
    others = []
    for text in value:
        if not isinstance(text, str):
            raise MetadataError(f"checksum: entry {text!r} is not a string")
        kind, colon, digits = text.strip().partition(":")
        if not colon or not kind or not digits:
            raise MetadataError(f"checksum: {text!r} is not <algorithm>:<value>")
        if kind.lower() == "enstore" and digits.isdigit():
            _check_representable(int(digits), "checksum", text)
        elif kind.lower() not in ("adler32", "enstore"):
            others.append(f"{kind.lower()}:{digits}")
    kinds = [entry.partition(":")[0] for entry in _unique(others)]
    if len(set(kinds)) != len(kinds):
        repeated = next(kind for kind in kinds if kinds.count(kind) > 1)
        raise MetadataError(f"checksum: two different {repeated} values")
    try:
        adler = adler32_from_checksums(list(value), file_size)
    except MetadataError as exc:
        raise MetadataError(f"checksum: {exc.message}") from None
    if adler is None:
        return _unique(others)
    _check_representable(adler, "checksum", format_adler32(adler))
    return _unique([format_adler32(adler)] + others)


def _check_representable(value: int, field: str, text: str) -> None:
    """Both 16-bit halves of an adler32 (or enstore) value are sums modulo 65521."""
    if value > 0xFFFFFFFF or (value & 0xFFFF) >= ADLER_MOD or (value >> 16) >= ADLER_MOD:
        raise MetadataError(
            f"{field}: {text} is not a possible adler32 value (each half must be below {ADLER_MOD})"
        )


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _parents(value: Any) -> list[dict]:
    if not isinstance(value, (list, tuple)):
        raise MetadataError(
            f'parents: must be a list of {{"file_name": ...}}, not {type(value).__name__}'
        )
    out = []
    for index, entry in enumerate(value):
        where = f"parents[{index}]"
        if isinstance(entry, str):  # SAM also accepts bare names
            entry = {"file_name": entry}
        if not isinstance(entry, dict) or "file_name" not in entry:
            raise MetadataError(f'{where}: must be {{"file_name": ...}}, not {entry!r}')
        out.append({"file_name": _file_name(entry["file_name"], f"{where}.file_name")})
    names = [entry["file_name"] for entry in out]
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise MetadataError(f"parents: {duplicate} is listed twice")
    return out


def _application(value: Any) -> dict:
    if not isinstance(value, dict):
        raise MetadataError(f"application: must be {{family, name, version}}, not {value!r}")
    extra = set(value) - set(APPLICATION_FIELDS)
    if extra:
        raise MetadataError(
            f"application: unknown field {sorted(extra)[0]!r} (want family, name, version)"
        )
    out = {}
    for key in APPLICATION_FIELDS:
        if key not in value:
            raise MetadataError(f"application.{key}: missing")
        out[key] = _string(value[key], f"application.{key}")
    return out


def _iso_time(value: Any, field: str) -> str:
    value = _string(value, field)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise MetadataError(f"{field}: {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise MetadataError(f"{field}: {value!r} has no UTC offset (write e.g. +00:00)")
    return moment.isoformat()


SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"


def source_date_epoch() -> int | None:
    """``$SOURCE_DATE_EPOCH`` (reproducible builds: the time to write instead of the clock's), or
    None.

    A value that is not a whole number of seconds is ignored, as reproducible-builds tools do."""
    text = os.environ.get(SOURCE_DATE_EPOCH, "").strip()
    return int(text) if text.isdigit() else None


def now_iso() -> str:
    """The current time in ISO 8601 with the local UTC offset, to the second; with
    ``SOURCE_DATE_EPOCH`` set, that moment instead, in UTC (so outputs can be byte-reproducible)."""
    epoch = source_date_epoch()
    if epoch is not None:
        return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
    return iso_now()


# --- crosschecks --------------------------------------------------------------------------


def expected_facts(md: dict) -> FileFacts:
    """Size, adler32 (None when the metadata has none) and event count that ``md`` promises.

    ``md`` may be a sidecar or a catalogue record (fields unknown here are ignored).
    """
    md = normalize_metadata(md, strict=False)
    for key in ("file_size", "event_count"):
        if key not in md:
            raise MetadataError(f"{key}: missing (needed to check {md['file_name']})")
    return FileFacts(md["file_size"], adler32_from_checksums(md.get("checksum")), md["event_count"])


def stated_facts(md: dict, *, source: str) -> FileFacts:
    """Every fact ``md`` (a sidecar, or a catalogue record: ``source``) states of its file that
    the file also knows: ``expected_facts`` and the name, run numbers, first and last event."""
    md = normalize_metadata(md, strict=False)  # records of a catalogue may know more fields
    runs = tuple(sorted({int(entry[0]) for entry in md["runs"]})) if md.get("runs") else None
    return expected_facts(md)._replace(
        file_name=md.get("file_name"),
        runs=runs,
        first_event=md.get("first_event"),
        last_event=md.get("last_event"),
        source=source,
    )


# --- merging ------------------------------------------------------------------------------


def check_agreement(inputs: list[tuple[str, dict]]) -> dict:
    """The values of ``AGREEING_KEYS`` shared by all ``inputs`` ((name, metadata) pairs).

    Keys no input has are left out of the result.  When two inputs differ (having a key and
    not having it counts as differing) this raises ``InconsistentInputs`` naming the key,
    both values and one input having each.
    """
    if not inputs:
        raise InconsistentInputs("no inputs to compare")
    seen: dict[str, tuple[Any, str]] = {}
    for name, md in inputs:
        values = _agreeing_values(name, md)
        for key in AGREEING_KEYS:
            if key not in seen:
                seen[key] = (values[key], name)
            elif values[key] != seen[key][0]:
                first, first_name = seen[key]
                raise InconsistentInputs(
                    f"inputs disagree on {key}: {_shown(first)} in {first_name} but "
                    f"{_shown(values[key])} in {name}"
                )
    return {key: value for key, (value, _) in seen.items() if value is not None}


def _agreeing_values(name: str, md: dict) -> dict[str, Any]:
    try:
        md = normalize_metadata(md, strict=False)  # sidecars or catalogue records
    except MetadataError as exc:
        raise exc.with_path(name) from None
    application = md.get("application", {})
    run_types = list(dict.fromkeys(run[2] for run in md.get("runs", [])))
    if len(run_types) > 1:
        raise InconsistentInputs(
            f"runs of one input disagree on run_type: {_shown(run_types[0])} and "
            f"{_shown(run_types[1])}",
            path=name,
        )
    return {
        "data_tier": md.get("data_tier"),
        "file_format": md.get("file_format"),
        "application.family": application.get("family"),
        "application.name": application.get("name"),
        "application.version": application.get("version"),
        "run_type": run_types[0] if run_types else None,
        "data_stream": md.get("data_stream"),
    }


def _shown(value: Any) -> str:
    return "nothing" if value is None else repr(value)


def merged_metadata(
    inputs: list[tuple[str, dict]],
    *,
    file_name: str,
    file_size: int,
    adler32: int,
    event_count: int,
    first_event: int,
    last_event: int,
    runs: list[list],
    merge_mode: str,
    application: dict,
    start_time: str,
    end_time: str,
    skipped: Sequence[dict] = (),
    data_tier: str = "thumbnail",
    agreed: dict | None = None,
) -> dict:
    """The SAM metadata of a merged file made from ``inputs`` ((name, metadata) pairs, in order).

    The inputs must agree (``check_agreement``; ``agreed``: what it found already, for inputs
    checked before they were merged).  ``group``, ``data_stream`` and ``file_type``
    are carried over when all inputs agree on them.  Free-form parameters record how the file
    was made: ``Merge.mode``, ``Merge.input_count`` (the inputs merged, i.e. the parents) and
    ``Merge.skipped`` (inputs left out, each ``{"file_name", "reason"}``).
    """
    if agreed is None:
        agreed = check_agreement(inputs)
    md: dict[str, Any] = {
        "file_name": file_name,
        "file_size": file_size,
        "checksum": [format_adler32(adler32)],
        "event_count": event_count,
        "first_event": first_event,
        "last_event": last_event,
        "runs": runs,
        "data_tier": data_tier,
        "file_format": "tmb",
        "parents": [{"file_name": Path(name).name} for name, _ in inputs],
        "application": application,
        "start_time": start_time,
        "end_time": end_time,
    }
    if "data_stream" in agreed:
        md["data_stream"] = agreed["data_stream"]
    for key in CARRIED_KEYS:
        values = {input_md.get(key) for _, input_md in inputs}
        if len(values) == 1 and None not in values:
            md[key] = values.pop()
    md["Merge.mode"] = _string(merge_mode, "Merge.mode")
    md["Merge.input_count"] = len(inputs)
    md["Merge.skipped"] = [_skipped_entry(entry, index) for index, entry in enumerate(skipped)]
    return normalize_metadata(md)


def _skipped_entry(entry: Any, index: int) -> dict:
    where = f"Merge.skipped[{index}]"
    if not isinstance(entry, dict) or set(entry) != {"file_name", "reason"}:
        raise MetadataError(f'{where}: must be {{"file_name", "reason"}}, not {entry!r}')
    return {
        "file_name": _string(entry["file_name"], f"{where}.file_name"),
        "reason": _string(entry["reason"], f"{where}.reason"),
    }
