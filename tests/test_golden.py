"""The checked-in version-1 sample files, the writer that made them, and docs/FORMAT.md agree.

- The reader reads exactly the events ``tests/data/make_golden.py`` wrote, and both files
  verify (deep, and against the sidecar where there is one).
- Writing the same inputs again gives byte-identical files, so any change of the bytes the
  writer produces is deliberate (it needs a new sample file and, if the layout changed, a new
  format version).  The ``none``-codec file is always compared; the mixed file has a zstd
  block, whose bytes may differ between libzstd versions, so it is compared only under the
  libzstd version that made it.
- Every table of docs/FORMAT.md matches the structs, dtypes and bounds of ``engine/format.py``
  and the codec table of ``engine/codecs.py``, and the sample files hold the documented values
  at the documented offsets (read through the doc's own tables, and at a few literal offsets).
"""

from __future__ import annotations

import importlib.util
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from engine import format as fmt
from engine.checksums import xxh3_64
from engine.codecs import CODECS, codec_by_name, codec_for_id
from engine.readers import open_file
from engine.verify import verify_file

DATA = Path(__file__).parent / "data"
DOC = Path(__file__).parent.parent / "docs" / "FORMAT.md"


def load_make_golden():
    spec = importlib.util.spec_from_file_location("make_golden", DATA / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


golden = load_make_golden()
MIXED = DATA / golden.MIXED_NAME
NONE = DATA / golden.NONE_NAME


# ---------------------------------------------------------------------------------------------
# (a) reading


@pytest.mark.parametrize("path", [MIXED, NONE], ids=["mixed", "none"])
def test_reader_reads_the_expected_events(path):
    with open_file(path) as reader:
        got = [(e.run, e.event, bytes(e.payload)) for e in reader.iter_events()]
        assert got == golden.EVENTS
        assert reader.events.digest.tolist() == [xxh3_64(p) for _, _, p in golden.EVENTS]
        assert reader.events.block.tolist() == [0, 0, 0, 0, 1, 1, 1]
        assert reader.block_count == 2
        assert reader.metadata["created"] == golden.CREATED
        assert reader.metadata["file_name"] == path.name
    report = verify_file(path, deep=True)
    assert report.ok, report.error


def test_mixed_file_has_a_zstd_and_a_none_block_and_matches_its_sidecar():
    with open_file(MIXED) as reader:
        assert reader.blocks["codec"].tolist() == [fmt.CODEC_ZSTD, fmt.CODEC_NONE]
        assert reader.uuid == golden.MIXED_UUID
    report = verify_file(MIXED, metadata="auto")
    assert report.ok and report.metadata_checked == "sidecar"


# ---------------------------------------------------------------------------------------------
# (b) the writer reproduces the files


def test_writer_reproduces_the_none_file_byte_for_byte(tmp_path):
    result = golden.write_none(tmp_path)
    assert result.path.read_bytes() == NONE.read_bytes()


def test_writer_reproduces_the_mixed_file_under_the_same_libzstd(tmp_path):
    with open_file(MIXED) as reader:
        made_with = reader.metadata["zstd_version"]
    if made_with != golden.libzstd_version():
        pytest.skip(
            f"{MIXED.name} was compressed by libzstd {made_with}, this is "
            f"{golden.libzstd_version()}"
        )
    result = golden.write_mixed(tmp_path)
    assert result.path.read_bytes() == MIXED.read_bytes()
    assert golden.sidecar_metadata(result) == __import__("json").loads(
        (DATA / (MIXED.name + ".json")).read_text()
    )


# ---------------------------------------------------------------------------------------------
# docs/FORMAT.md against engine/format.py

TYPE_SIZES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}
STRUCT_TYPES = {"B": "u8", "H": "u16", "I": "u32", "Q": "u64"}


def doc_tables() -> dict[str, list[dict[str, str]]]:
    """Each markdown table of FORMAT.md under its nearest heading, as a list of row dicts."""
    tables: dict[str, list[dict[str, str]]] = {}
    heading, columns = None, None
    for line in DOC.read_text().splitlines():
        if line.startswith("#"):
            heading, columns = line.lstrip("#").strip(), None
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if columns is None:
                columns = cells
                tables[heading] = []
            elif not set("".join(cells)) <= set("-: "):
                tables[heading].append(dict(zip(columns, cells, strict=True)))
        else:
            columns = None
    return tables


TABLES = doc_tables()


def struct_fields(s: struct.Struct) -> list[tuple[int, int, str]]:
    """(offset, size, type) of each field of a little-endian, unpadded struct."""
    out, offset = [], 0
    for count, code in re.findall(r"(\d*)([a-zA-Z])", s.format.lstrip("<")):
        if code == "s":
            out.append((offset, int(count), "bytes"))
            offset += int(count)
        else:
            for _ in range(int(count or 1)):
                size = struct.calcsize("<" + code)
                out.append((offset, size, STRUCT_TYPES[code]))
                offset += size
    assert offset == s.size
    return out


def doc_fields(heading: str) -> list[tuple[int, int, str]]:
    return [
        (int(r["Offset"]), int(r["Size"]), r["Type"])
        for r in TABLES[heading]
        if r["Size"].isdigit()
    ]


@pytest.mark.parametrize(
    "heading, layout",
    [
        ("File header", fmt.HEADER),
        ("Block header", fmt.BLOCK_HEADER),
        ("Event record", fmt.RECORD_HEADER),
        ("Index header", fmt.INDEX_HEADER),
        ("Trailer", fmt.TRAILER),
    ],
)
def test_doc_struct_tables_match_format_py(heading, layout):
    assert doc_fields(heading) == struct_fields(layout)
    assert f'struct.Struct("{layout.format}")' in DOC.read_text()


def test_doc_block_table_matches_block_dtype():
    rows = TABLES["Block table entry"]
    assert [r["Field"] for r in rows] == list(fmt.BLOCK_DTYPE.names)
    for row in rows:
        dtype, offset = fmt.BLOCK_DTYPE.fields[row["Field"]][:2]
        assert (int(row["Offset"]), int(row["Size"])) == (offset, dtype.itemsize)
        if row["Type"] in TYPE_SIZES:
            assert dtype.kind == "u" and dtype.itemsize == TYPE_SIZES[row["Type"]]
    assert sum(int(r["Size"]) for r in rows) == fmt.BLOCK_DTYPE.itemsize == 48


def test_doc_event_columns_match_format_py():
    rows = TABLES["Event columns"]
    assert [(r["Field"], r["Type"]) for r in rows] == [
        (name, f"u{np.dtype(t).itemsize * 8}") for name, t in fmt.EVENT_COLUMNS
    ]
    assert sum(int(r["Size"]) for r in rows) == fmt.EVENT_BYTES == 28
    assert fmt.index_length(2, 7) == 32 + 48 * 2 + 28 * 7


def test_doc_codecs_match_the_codec_table():
    """FORMAT.md's codec table is ``engine.codecs.CODECS``: every id with its name, each class
    carrying its own row, and the format's named codec bytes among them."""
    assert {int(r["Id"]): r["Name"] for r in TABLES["Codecs"]} == {
        codec_id: codec.name for codec_id, codec in CODECS.items()
    }
    for codec_id, codec in CODECS.items():
        assert codec.codec_id == codec_id
        assert codec_for_id(codec_id).codec_id == codec_by_name(codec.name).codec_id == codec_id
    assert CODECS[fmt.CODEC_NONE].name == "none" and CODECS[fmt.CODEC_ZSTD].name == "zstd"


def test_the_command_offers_the_codecs_of_the_table():
    """``tmbmerge generate --codec`` lists its choices without importing the codecs (start-up):
    they must be the table's names."""
    import argparse

    from bindings.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    codec = next(a for a in commands.choices["generate"]._actions if a.dest == "codec")
    assert sorted(codec.choices) == sorted(c.name for c in CODECS.values())


def test_doc_bounds_match_format_py():
    bounds = {r["Constant"].strip("`"): int(r["Value"]) for r in TABLES["Bounds"]}
    assert bounds == {name: getattr(fmt, name) for name in bounds}
    assert set(bounds) >= {"MAX_METADATA_BYTES", "MAX_BLOCK_BYTES", "MAX_COMPRESSED_OVERHEAD"}


# ---------------------------------------------------------------------------------------------
# (c) the sample file holds the documented values at the documented offsets

NONE_LAYOUT = {  # absolute offsets in golden_v1_none.tmb
    "metadata_length": 91,
    "blocks": [155, 439],
    "index_offset": 555,
    "index_length": 324,
    "trailer": 879,
    "size": 943,
}


def unpack_doc_row(data: bytes, base: int, row: dict[str, str]):
    offset, size, kind = base + int(row["Offset"]), int(row["Size"]), row["Type"]
    raw = data[offset : offset + size]
    if kind == "bytes":
        return raw
    return int.from_bytes(raw, "little")


def check_doc_table(data: bytes, heading: str, base: int, expected: dict) -> None:
    rows = [r for r in TABLES[heading] if r["Size"].isdigit()]
    assert {r["Field"] for r in rows} == set(expected), heading
    for row in rows:
        assert unpack_doc_row(data, base, row) == expected[row["Field"]], (
            f"{heading}: {row['Field']}"
        )


def test_none_file_fields_at_documented_offsets():
    data = NONE.read_bytes()
    L = NONE_LAYOUT
    assert len(data) == L["size"]
    meta_end = 64 + L["metadata_length"]
    check_doc_table(
        data,
        "File header",
        0,
        {
            "magic": b"\x89TMB\r\n\x1a\n",
            "version": 1,
            "header_size": 64,
            "flags": 0,
            "uuid": golden.NONE_UUID.bytes,
            "metadata_length": L["metadata_length"],
            "reserved1": 0,
            "metadata_digest": xxh3_64(data[64:meta_end]),
            "reserved2": 0,
            "header_digest": xxh3_64(data[:56]),
        },
    )
    assert data[64:meta_end] == (
        b'{"created":"2004-06-15T12:00:00+00:00","file_name":"golden_v1_none.tmb",'
        b'"format_version":1}'
    )
    assert L["blocks"][0] == meta_end
    block_ends = L["blocks"][1:] + [L["index_offset"]]
    first = 0
    for number, (start, end) in enumerate(zip(L["blocks"], block_ends, strict=True)):
        stored = data[start + 48 : end]
        count = 4 if number == 0 else 3
        check_doc_table(
            data,
            "Block header",
            start,
            {
                "magic": b"TMBK",
                "codec": 0,
                "flags": 0,
                "reserved1": 0,
                "compressed_length": len(stored),
                "uncompressed_length": len(stored),
                "event_count": count,
                "reserved2": 0,
                "compressed_digest": xxh3_64(stored),
                "uncompressed_digest": xxh3_64(stored),
                "header_digest": xxh3_64(data[start : start + 40]),
            },
        )
        # The none codec stores the records themselves: walk them with the doc's record table.
        pos = start + 48
        for run, event, payload in golden.EVENTS[first : first + count]:
            check_doc_table(
                data, "Event record", pos, {"run": run, "event": event, "length": len(payload)}
            )
            assert data[pos + 16 : pos + 16 + len(payload)] == payload
            pos += 16 + len(payload)
        assert pos == end
        entry = L["index_offset"] + 32 + 48 * number
        check_doc_table(
            data,
            "Block table entry",
            entry,
            {
                "offset": start,
                "compressed_length": len(stored),
                "uncompressed_length": len(stored),
                "event_count": count,
                "codec": 0,
                "pad": b"\x00\x00\x00",
                "first_event": first,
                "compressed_digest": xxh3_64(stored),
                "uncompressed_digest": xxh3_64(stored),
            },
        )
        first += count

    index = L["index_offset"]
    check_doc_table(
        data,
        "Index header",
        index,
        {"magic": b"TMBI", "reserved1": 0, "block_count": 2, "event_count": 7, "reserved2": 0},
    )
    column = index + 32 + 48 * 2
    values = {
        "event": [e for _, e, _ in golden.EVENTS],
        "digest": [xxh3_64(p) for _, _, p in golden.EVENTS],
        "run": [r for r, _, _ in golden.EVENTS],
        "length": [len(p) for _, _, p in golden.EVENTS],
        "block": [0, 0, 0, 0, 1, 1, 1],
    }
    for row in TABLES["Event columns"]:
        size = int(row["Size"])
        got = [
            int.from_bytes(data[column + i * size : column + (i + 1) * size], "little")
            for i in range(7)
        ]
        assert got == values[row["Field"]], row["Field"]
        column += 7 * size
    assert column == L["trailer"] == index + L["index_length"]

    check_doc_table(
        data,
        "Trailer",
        L["trailer"],
        {
            "magic": b"TMBT",
            "version": 1,
            "reserved": 0,
            "index_offset": index,
            "index_length": L["index_length"],
            "index_digest": xxh3_64(data[index : L["trailer"]]),
            "event_count": 7,
            "block_count": 2,
            "trailer_digest": xxh3_64(data[L["trailer"] : L["trailer"] + 48]),
            "end_magic": b"TMB:END\n",
        },
    )


def test_mixed_file_literal_offsets():
    """A few fields at literal offsets (the numbers in FORMAT.md's tables), no table parsing."""
    data = MIXED.read_bytes()
    assert data[:8] == b"\x89TMB\r\n\x1a\n"
    assert struct.unpack_from("<HH", data, 8) == (1, 64)
    assert data[16:32] == golden.MIXED_UUID.bytes
    (mlen,) = struct.unpack_from("<I", data, 32)
    block0 = 64 + mlen
    assert data[block0 : block0 + 4] == b"TMBK" and data[block0 + 4] == fmt.CODEC_ZSTD
    clen0, ulen0, count0 = struct.unpack_from("<III", data, block0 + 8)
    assert (ulen0, count0) == (236, 4)
    assert data[block0 + 48 : block0 + 52] == b"\x28\xb5\x2f\xfd"  # a zstd frame
    block1 = block0 + 48 + clen0
    assert data[block1 : block1 + 4] == b"TMBK" and data[block1 + 4] == fmt.CODEC_NONE
    assert struct.unpack_from("<IQI", data, block1 + 48) == (176853, 3, 0)  # the empty event
    trailer = len(data) - 64
    assert data[trailer : trailer + 4] == b"TMBT" and data[-8:] == b"TMB:END\n"
    index_offset, index_length = struct.unpack_from("<QQ", data, trailer + 8)
    assert index_offset == block1 + 48 + 68 and index_offset + index_length == trailer
    assert data[index_offset : index_offset + 4] == b"TMBI"
