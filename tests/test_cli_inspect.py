"""``tmbmerge dump`` and ``tmbmerge verify`` through ``bindings.cli.main``: output, JSON, exit
codes.

Most tests call ``main([...])`` in-process and read stdout/stderr with capsys; a few run a
subprocess where the process boundary is the point: which heavy modules a command imports
(numba only for ``--deep``; neither numpy nor numba for ``--help``); start-up time is measured
in ``bench/test_bench_startup.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from bindings.cli import main
from engine.checksums import xxh3_64
from engine.format import BLOCK_HEADER_SIZE, HEADER_MAGIC
from engine.metadata import write_sidecar
from engine.readers import open_file
from engine.verify.dump import iter_event_rows
from engine.writer import TmbWriter

REPO = Path(__file__).resolve().parent.parent
EVENTS = [(176852, 100 + i, bytes([i]) * (7 * i)) for i in range(10)]  # first payload is empty


def write_tmb(path: Path, events=EVENTS, *, codec="zstd", block_bytes=200) -> Path:
    with TmbWriter(path, codec=codec, block_bytes=block_bytes, fsync=False) as writer:
        for run, event, payload in events:
            writer.write_event(run, event, payload)
    return path


def adler_of(path: Path) -> str:
    return f"{zlib.adler32(path.read_bytes()):08x}"


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def first_block_payload_offset(path: Path) -> int:
    with open_file(path) as reader:
        return int(reader.blocks["offset"][0]) + BLOCK_HEADER_SIZE + 2


@pytest.fixture()
def good(tmp_path):
    return write_tmb(tmp_path / "good.tmb")


@pytest.fixture()
def bad(tmp_path):
    """A sound file with one byte of block 0's stored bytes flipped (its own name, so its
    embedded file_name still matches)."""
    path = write_tmb(tmp_path / "bad.tmb")
    flip(path, first_block_payload_offset(path))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------
# dump


def test_dump_text(capsys, good):
    code, out, err = run(capsys, "dump", good)
    assert code == 0 and err == ""
    with open_file(good) as reader:
        uuid, blocks, mlen = str(reader.uuid), reader.blocks.copy(), reader.header.metadata_length
    assert f"magic            {HEADER_MAGIC.hex()}" in out
    assert "format version   1" in out
    assert f"uuid             {uuid}" in out
    assert f"metadata length  {mlen} bytes" in out
    assert '"file_name": "good.tmb"' in out
    assert f"blocks ({len(blocks)})" in out and len(blocks) >= 2
    for number, entry in enumerate(blocks):
        row = re.search(
            rf"^\s+{number}\s+{entry['offset']}\s+zstd\s+{entry['compressed_length']}\s+"
            rf"{entry['uncompressed_length']}\s+[\d.]+\s+{entry['event_count']}\s+"
            rf"{int(entry['compressed_digest']):016x}\s+{int(entry['uncompressed_digest']):016x}$",
            out,
            re.MULTILINE,
        )
        assert row, f"block {number} row missing"
    assert f"file size      {good.stat().st_size} bytes" in out
    assert "events         10" in out
    assert "first event    100" in out and "last event     109" in out
    assert "runs           176852" in out
    assert f"adler32        {adler_of(good)}" in out
    assert "events (" not in out


def test_dump_text_events(capsys, good):
    code, out, _ = run(capsys, "dump", good, "--events")
    assert code == 0
    lines = out.splitlines()
    start = lines.index("events (10)") + 2
    rows = [line.split() for line in lines[start:]]
    with open_file(good) as reader:
        blocks = reader.events.block.tolist()
    assert rows == [
        [str(r), str(e), str(len(p)), f"{xxh3_64(p):016x}", str(b)]
        for (r, e, p), b in zip(EVENTS, blocks, strict=True)
    ]


def test_dump_json(capsys, good):
    code, out, _ = run(capsys, "dump", good, "--json")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"file", "header", "metadata", "blocks", "index", "totals"}
    assert doc["header"] == {
        "magic": HEADER_MAGIC.hex(),
        "version": 1,
        "uuid": doc["header"]["uuid"],
        "metadata_length": doc["header"]["metadata_length"],
    }
    assert doc["metadata"]["file_name"] == "good.tmb"
    totals = doc["totals"]
    assert totals["file_size"] == good.stat().st_size
    assert totals["adler32"] == adler_of(good)
    assert (totals["events"], totals["first_event"], totals["last_event"], totals["runs"]) == (
        10,
        100,
        109,
        [176852],
    )
    assert totals["blocks"] == len(doc["blocks"]) >= 2
    assert totals["uncompressed_bytes"] == sum(16 + len(p) for _, _, p in EVENTS)
    assert totals["compression_ratio"] == round(
        totals["uncompressed_bytes"] / totals["stored_bytes"], 3
    )
    offsets = [b["offset"] for b in doc["blocks"]]
    assert offsets[0] == 64 + doc["header"]["metadata_length"]
    for block in doc["blocks"]:
        assert block["codec"] == "zstd"
        assert re.fullmatch(r"[0-9a-f]{16}", block["compressed_digest"])
        assert re.fullmatch(r"[0-9a-f]{16}", block["uncompressed_digest"])
    assert sum(b["event_count"] for b in doc["blocks"]) == 10
    assert doc["index"]["offset"] + doc["index"]["length"] == totals["file_size"] - 64


def test_dump_json_events(capsys, good):
    code, out, _ = run(capsys, "dump", good, "--json", "--events")
    assert code == 0
    doc = json.loads(out)
    assert [(e["run"], e["event"], e["size"], e["digest"]) for e in doc["events"]] == [
        (r, e, len(p), f"{xxh3_64(p):016x}") for r, e, p in EVENTS
    ]
    assert [e["block"] for e in doc["events"]] == sorted(e["block"] for e in doc["events"])
    assert doc["events"][-1]["block"] == len(doc["blocks"]) - 1


@pytest.mark.parametrize("events_flag", [[], ["--events"]])
def test_dump_of_a_file_without_events(capsys, tmp_path, events_flag):
    path = write_tmb(tmp_path / "empty.tmb", events=[])
    code, out, _ = run(capsys, "dump", path, "--json", *events_flag)
    assert code == 0
    doc = json.loads(out)
    assert doc["blocks"] == []
    assert doc["totals"]["events"] == 0 and doc["totals"]["first_event"] is None
    assert doc["totals"]["runs"] == [] and doc["totals"]["compression_ratio"] is None
    assert doc.get("events", []) == []
    assert ("events" in doc) == bool(events_flag)
    code, out, _ = run(capsys, "dump", path, *events_flag)
    assert code == 0 and "first event    -" in out and "compression    -" in out


def test_dump_shows_a_file_with_damaged_block_bytes(capsys, bad):
    """dump reads the validated structure only; block bytes are verify's business."""
    code, out, _ = run(capsys, "dump", bad)
    assert code == 0
    assert f"adler32        {adler_of(bad)}" in out
    assert run(capsys, "verify", bad)[0] == 5


def test_dump_errors(capsys, tmp_path, good):
    code, _, err = run(capsys, "dump", tmp_path / "missing.tmb")
    assert code == 3 and "no such file" in err
    data = bytearray(good.read_bytes())
    data[-70] ^= 0xFF  # inside the index
    good.write_bytes(bytes(data))
    code, out, err = run(capsys, "dump", good)
    assert code == 5 and out == ""
    assert str(good) in err and "index" in err


def test_event_rows_are_produced_lazily_a_chunk_at_a_time():
    """Listing events converts one chunk of the index at a time, only as lines are asked for."""
    import numpy as np

    from engine.format import EventTable

    table = EventTable(
        np.arange(10, dtype=np.uint64),
        np.arange(10, dtype=np.uint64) * 2**60,
        np.full(10, 7, dtype=np.uint32),
        np.arange(10, dtype=np.uint32),
        np.zeros(10, dtype=np.uint32),
    )
    slices = []

    class Recording:
        def __len__(self):
            return len(table)

        def slice(self, start, stop):
            slices.append((start, stop))
            return table.slice(start, stop)

    rows = iter_event_rows(Recording(), chunk=4)
    assert next(rows) == (7, 0, 0, "0000000000000000", 0)
    assert slices == [(0, 4)]
    assert list(rows)[-1] == (7, 9, 9, f"{(9 * 2**60) % 2**64:016x}", 0)
    assert slices == [(0, 4), (4, 8), (8, 12)]


# ---------------------------------------------------------------------------------------------
# verify


def test_verify_good(capsys, good):
    code, out, err = run(capsys, "verify", good)
    assert code == 0 and err == ""
    assert out == f"OK {good} (10 events, adler32:{adler_of(good)})\n"


def test_verify_quiet(capsys, good, bad):
    code, out, err = run(capsys, "verify", "--quiet", good)
    assert (code, out, err) == (0, "", "")
    code, out, err = run(capsys, "verify", "--quiet", good, bad)
    assert code == 5 and out == "" and len(err.splitlines()) == 1


def test_verify_bad(capsys, bad):
    code, out, err = run(capsys, "verify", bad)
    assert code == 5 and out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"tmbmerge: error: {bad}: block 0, offset ")
    assert "block data digest differs" in line and "expected" in line and "found" in line


@pytest.mark.parametrize(
    "kind, exit_code, text",
    [
        ("missing", 3, "no such file"),
        ("directory", 3, "is a directory"),
        ("not-tmb", 4, "not a TMB file"),
        ("empty", 5, "file is empty"),
        ("truncated", 5, "trailer"),
    ],
)
def test_verify_unusable_inputs(capsys, tmp_path, good, kind, exit_code, text):
    path = tmp_path / f"{kind}.tmb"
    if kind == "directory":
        path.mkdir()
    elif kind == "not-tmb":
        path.write_text("run,event\n176852,1\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:-1])
    code, out, err = run(capsys, "verify", path)
    assert code == exit_code
    assert out == ""
    assert str(path) in err and text in err


def test_verify_many_files_exits_with_the_most_serious_failure(capsys, tmp_path, good, bad):
    missing = tmp_path / "missing.tmb"
    foreign = tmp_path / "foreign.tmb"
    foreign.write_bytes(b"PK\x03\x04 not a tmb file at all")
    code, out, err = run(capsys, "verify", good, missing, bad, foreign)
    assert code == 5  # integrity beats format and input
    assert out == f"OK {good} (10 events, adler32:{adler_of(good)})\n"
    assert [line.split(": ")[2] for line in err.splitlines()] == [
        str(missing),
        str(bad),
        str(foreign),
    ]
    assert all(line.startswith("tmbmerge: error: ") for line in err.splitlines())
    assert run(capsys, "verify", missing, foreign, good)[0] == 4  # format beats input
    assert run(capsys, "verify", missing, good)[0] == 3


def test_verify_json(capsys, good, bad):
    code, out, err = run(capsys, "verify", "--json", good, bad)
    assert code == 5 and err == ""
    reports = json.loads(out)
    assert [r["file"] for r in reports] == [str(good), str(bad)]
    ok, failed = reports
    assert ok["ok"] is True and ok["deep"] is False
    assert ok["checksum"] == f"adler32:{adler_of(good)}"
    assert (ok["event_count"], ok["file_size"]) == (10, good.stat().st_size)
    assert ok["block_count"] >= 2 and "error" not in ok
    assert failed["ok"] is False
    assert failed["error"]["error"] == "ChecksumMismatch"
    assert failed["error"]["exit_code"] == 5
    assert failed["error"]["region"] == "block 0"
    assert failed["error"]["path"] == str(bad)
    assert isinstance(failed["error"]["offset"], int)


def test_verify_deep_and_jobs(capsys, tmp_path, good, bad):
    other = write_tmb(tmp_path / "other.tmb", codec="none", block_bytes=64)
    code, out, _ = run(capsys, "verify", "--deep", "--jobs", "2", good, other)
    assert code == 0 and out.count("OK ") == 2
    code, out, _ = run(capsys, "verify", "--deep", "--json", bad)
    assert code == 5 and json.loads(out)[0]["deep"] is True


def test_verify_rejects_bad_options(capsys, good):
    for argv in (
        ["verify", "--jobs", "0", good],
        ["verify", "--metadata", "sometimes", good],
        ["verify"],
    ):
        with pytest.raises(SystemExit) as exc:
            main([str(a) for a in argv])
        assert exc.value.code == 2
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------
# sidecars


def sidecar_for(path: Path, **changes) -> None:
    md = {
        "file_name": path.name,
        "file_size": path.stat().st_size,
        "checksum": [f"adler32:{adler_of(path)}"],
        "event_count": 10,
    }
    md.update(changes)
    write_sidecar(path, md)


def test_verify_against_a_matching_sidecar(capsys, good):
    sidecar_for(good)
    code, out, _ = run(capsys, "verify", "--json", good)
    assert code == 0 and json.loads(out)[0]["metadata_checked"] == "sidecar"


@pytest.mark.parametrize(
    "changes, text",
    [
        ({"event_count": 11}, "event count differs from the sidecar"),
        ({"file_size": 1}, "file size differs from the sidecar"),
        ({"checksum": ["adler32:00000001"]}, "adler32 differs from the sidecar"),
    ],
)
def test_verify_sidecar_mismatch(capsys, good, changes, text):
    sidecar_for(good, **changes)
    code, out, err = run(capsys, "verify", good)
    assert code == 6 and out == ""
    assert text in err and str(good) in err
    assert run(capsys, "verify", "--metadata", "none", good)[0] == 0


def test_verify_file_renamed_away_from_its_embedded_name(capsys, tmp_path, good):
    renamed = tmp_path / "renamed.tmb"
    good.rename(renamed)
    code, _, err = run(capsys, "verify", renamed)
    assert code == 6 and "names another file" in err
    assert run(capsys, "verify", "--metadata", "none", renamed)[0] == 0


def test_consistency_outranks_format_and_input(capsys, tmp_path, good):
    sidecar_for(good, event_count=3)
    foreign = tmp_path / "foreign.tmb"
    foreign.write_text("hello")
    assert run(capsys, "verify", foreign, tmp_path / "missing.tmb", good)[0] == 6


# ---------------------------------------------------------------------------------------------
# Across the process boundary: what gets imported

PROBE = """
import json, sys
import bindings.cli
try:
    code = bindings.cli.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
loaded = sorted(
    name for name in ("numpy", "numba", "zstandard", "rich", "engine.walker") if name in sys.modules
)
print(json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""


def probe(*argv) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, argv)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return json.loads(done.stderr.strip().splitlines()[-1])


def test_fast_verify_does_not_import_numba(good):
    assert probe("verify", good) == {"code": 0, "loaded": ["numpy", "zstandard"]}
    deep = probe("verify", "--deep", good)["loaded"]  # decodes every block, without numba either
    assert "engine.walker" in deep and "numba" not in deep


def test_help_imports_neither_numpy_nor_numba():
    assert probe("--help") == {"code": 0, "loaded": []}
    assert probe("verify", "--help") == {"code": 0, "loaded": []}


def test_merge_imports_what_its_mode_needs(tmp_path):
    """A fast or safe merge of normal blocks decodes nothing (nor loads the live display's rich,
    with --quiet); deep loads the compiled record walk, and no merge loads numba.  (How long
    start-up takes is measured in bench/test_bench_startup.py.)"""
    good = write_tmb(
        tmp_path / "normal.tmb",
        [(176852, i, bytes([i]) * 4000) for i in range(20)],
        block_bytes=1 << 20,
    )  # one 80 kB block: copied verbatim, never decoded
    for mode in ("fast", "safe"):
        assert probe(
            "merge",
            good,
            "-o",
            tmp_path / f"{mode}.tmb",
            "--mode",
            mode,
            "--metadata",
            "none",
            "--quiet",
        ) == {"code": 0, "loaded": ["numpy", "zstandard"]}
    deep = probe(
        "merge",
        good,
        "-o",
        tmp_path / "deep.tmb",
        "--mode",
        "deep",
        "--metadata",
        "none",
        "--quiet",
    )["loaded"]
    assert deep == ["engine.walker", "numpy", "zstandard"]  # the compiled walk, not numba
