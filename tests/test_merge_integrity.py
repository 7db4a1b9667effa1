"""Damaged, truncated, mis-described and overlapping inputs: no mode lets one through.

- One flipped payload byte inside a block's stored data fails every mode with exit code 5 and a
  message naming the file and the block; nothing reaches the destination and no input changes.
  With ``--skip-bad`` the damaged input is left out and reported (report and ``Merge.skipped``).
- Inputs cut at any length (inside the header, the metadata, a block, the index, the trailer)
  are integrity errors (5) with nothing left behind.
- Sidecars that disagree with their file (adler32, event count, file size) fail safe and deep
  mode with exit code 6 naming the field; fast mode and ``--metadata none`` do not read them.
- Events shared between inputs (overlapping event numbers, or a byte copy of a file under
  another name) or repeated inside one input fail safe mode with exit code 6 naming both files;
  ``--skip-bad`` leaves the later input out.
- Deep mode decodes every event: a payload changed with every block digest recomputed passes
  the digest checks of fast and safe mode but not deep mode.
- The output's adler32, combined from the per-block checksums the reader computed, is checked
  against the output's bytes as read back: a block checksum that disagreed would be refused.
- Safe and deep modes read every block back from the output file as it is written: a byte
  changed on its way to the file is refused.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from merge_helpers import assert_nothing_written, concat_events, flip_payload_byte

import engine
from engine.checksums import xxh3_64
from engine.errors import (
    ChecksumMismatch,
    DuplicateEvents,
    IntegrityError,
    MetadataMismatch,
)
from engine.format import (
    BLOCK_HEADER_SIZE,
    HEADER_SIZE,
    RECORD_HEADER_SIZE,
    TRAILER_SIZE,
    BlockHeader,
    Trailer,
    pack_block_header,
    pack_index,
    pack_trailer,
)
from engine.generate import file_name
from engine.merge import MODES, MergeSpec, merge_files
from engine.metadata import read_sidecar, sidecar_path
from engine.verify import verify_file
from engine.writer import TmbWriter

pytestmark = pytest.mark.timeout(120)  # a hang fails here, not at the global limit

RUN = 178000


# -- a flipped byte ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_flipped_payload_byte_fails_every_mode(mode, cli, tmb_run, out_dir, leftovers, sha256_of):
    damaged = tmb_run[3]
    flip_payload_byte(damaged, block=2)
    before = {p: sha256_of(p) for p in tmb_run}
    out = out_dir / "m.tmb"

    result = cli("merge", *tmb_run, "-o", out, "--mode", mode)

    assert result.code == 5, result.err
    assert f"{damaged}: block 2" in result.err
    assert_nothing_written(out, leftovers)
    assert {p: sha256_of(p) for p in tmb_run} == before
    with pytest.raises(IntegrityError) as caught:
        merge_files(tmb_run, out, MergeSpec(mode=mode))
    assert caught.value.path == str(damaged) and caught.value.region == "block 2"
    assert_nothing_written(out, leftovers)


@pytest.mark.parametrize("mode", MODES)
def test_skip_bad_leaves_the_damaged_input_out(
    mode, cli, tmb_run, out_dir, read_event_list, leftovers, sha256_of
):
    damaged = tmb_run[1]
    flip_payload_byte(damaged, block=1)
    before = {p: sha256_of(p) for p in tmb_run}
    good = [p for p in tmb_run if p != damaged]
    out = out_dir / "m.tmb"

    result = cli("merge", *tmb_run, "-o", out, "--mode", mode, "--skip-bad", "--json")

    assert result.code == 0, result.err
    report = result.json()
    assert [s["file"] for s in report["skipped"]] == [str(damaged)]
    reason = report["skipped"][0]["reason"]
    assert (
        reason["exit_code"] == 5
        and reason["region"] == "block 1"
        and reason["path"] == str(damaged)
    )
    assert [i["accepted"] for i in report["inputs"]] == [p != damaged for p in tmb_run]
    assert read_event_list(out) == concat_events(read_event_list, good)
    md = read_sidecar(out)
    assert [s["file_name"] for s in md["Merge.skipped"]] == [damaged.name]
    assert "block 1" in md["Merge.skipped"][0]["reason"]
    assert md["parents"] == [{"file_name": p.name} for p in good]
    assert md["event_count"] == report["event_count"] == len(read_event_list(out))
    assert verify_file(out, metadata="auto").ok
    assert leftovers(out_dir) == []
    assert {p: sha256_of(p) for p in tmb_run} == before


@pytest.mark.parametrize("mode", ["fast", "safe"])
def test_skip_bad_with_every_input_damaged_writes_nothing(mode, cli, tmb_run, out_dir, leftovers):
    flip_payload_byte(tmb_run[0], block=0)
    flip_payload_byte(tmb_run[1], block=2)
    out = out_dir / "m.tmb"
    result = cli("merge", *tmb_run[:2], "-o", out, "--skip-bad", "--mode", mode)
    assert result.code != 0
    # the message must say which files are damaged and where, not only that digests differ
    assert f"{tmb_run[0]}: block 0" in result.err and f"{tmb_run[1]}: block 2" in result.err, (
        result.err
    )
    assert_nothing_written(out, leftovers)


# -- truncation --------------------------------------------------------------------------------


def _cut_points(path) -> dict[str, int]:
    with engine.open_file(path) as reader:
        blocks, size, index = reader.blocks, reader.file_size, reader.index_offset
        return {
            "inside-header": 20,
            "header-only": HEADER_SIZE,
            "inside-metadata": HEADER_SIZE + 10,
            "mid-block": int(blocks["offset"][1]) + BLOCK_HEADER_SIZE + 100,
            "between-blocks": int(blocks["offset"][2]),
            "inside-index": index + 40,
            "inside-trailer": size - TRAILER_SIZE // 2,
            "last-byte-missing": size - 1,
        }


@pytest.mark.parametrize(
    "where",
    [
        "inside-header",
        "header-only",
        "inside-metadata",
        "mid-block",
        "between-blocks",
        "inside-index",
        "inside-trailer",
        "last-byte-missing",
    ],
)
@pytest.mark.parametrize("mode", ["fast", "safe"])
def test_truncated_input_is_an_integrity_error(
    where, mode, cli, tmb_run, out_dir, leftovers, sha256_of
):
    cut = tmb_run[2]
    length = _cut_points(cut)[where]
    with open(cut, "r+b") as f:
        f.truncate(length)
    before = {p: sha256_of(p) for p in tmb_run}
    out = out_dir / "m.tmb"

    result = cli("merge", *tmb_run, "-o", out, "--mode", mode)

    assert result.code == 5, result.err
    assert str(cut) in result.err
    assert_nothing_written(out, leftovers)
    assert {p: sha256_of(p) for p in tmb_run} == before


# -- sidecars that disagree with their file ----------------------------------------------------


def _edit_sidecar(path, **changes):
    sidecar = sidecar_path(path)
    md = json.loads(sidecar.read_text())
    md.update(changes)
    sidecar.write_text(json.dumps(md))


SIDECAR_LIES = {
    # field: (value to write given the true sidecar, words the message must hold)
    "checksum": (lambda md: ["adler32:0badf00d"], "adler32"),
    "event_count": (lambda md: md["event_count"] + 1, "event count"),
    "file_size": (lambda md: md["file_size"] - 1, "file size"),
}


@pytest.mark.parametrize("field", sorted(SIDECAR_LIES))
def test_sidecar_disagreement(field, cli, tmb_run, out_dir, read_event_list, leftovers):
    lying = tmb_run[4]
    value, words = SIDECAR_LIES[field]
    _edit_sidecar(lying, **{field: value(read_sidecar(lying))})
    out = out_dir / "m.tmb"

    for mode in ("safe", "deep"):
        result = cli("merge", *tmb_run, "-o", out, "--mode", mode)
        assert result.code == 6, result.err
        assert str(lying) in result.err and words in result.err and "sidecar" in result.err
        assert_nothing_written(out, leftovers)
    with pytest.raises(MetadataMismatch):
        merge_files(tmb_run, out)
    assert_nothing_written(out, leftovers)

    # fast mode does not read sidecars; --metadata none tells safe and deep not to
    for options in (
        ["--mode", "fast"],
        ["--metadata", "none"],
        ["--mode", "deep", "--metadata", "none"],
    ):
        result = cli("merge", *tmb_run, "-o", out, *options, "--force")
        assert result.code == 0, (options, result.err)
        assert read_event_list(out) == concat_events(read_event_list, tmb_run)

    # with --skip-bad the input whose sidecar lies is left out
    result = cli("merge", *tmb_run, "-o", out, "--skip-bad", "--force", "--json")
    assert result.code == 0, result.err
    assert [s["file"] for s in result.json()["skipped"]] == [str(lying)]
    assert result.json()["skipped"][0]["reason"]["exit_code"] == 6
    assert read_event_list(out) == concat_events(
        read_event_list, [p for p in tmb_run if p != lying]
    )


# -- duplicate events ----------------------------------------------------------------------------


def test_inputs_sharing_events(cli, tmb_run, tmb_file_factory, out_dir, read_event_list, leftovers):
    """A resubmitted job's output: another partition whose event numbers overlap partition 2's."""
    first_of_p2 = read_event_list(tmb_run[2])[0][1]
    overlap = tmb_file_factory(
        tmb_run[0].parent / file_name(RUN, 10), partition=10, first_event=first_of_p2, n_events=10
    ).path
    shared = {e for _, e, _ in read_event_list(overlap)}
    assert shared & {e for _, e, _ in read_event_list(tmb_run[2])}
    assert not shared & {e for p in tmb_run if p != tmb_run[2] for _, e, _ in read_event_list(p)}
    out = out_dir / "m.tmb"

    for mode in ("safe", "deep"):
        result = cli("merge", *tmb_run, overlap, "-o", out, "--mode", mode)
        assert result.code == 6, result.err
        assert (
            str(overlap) in result.err
            and tmb_run[2].name in result.err
            and "appears again" in result.err
        )
        assert_nothing_written(out, leftovers)
    with pytest.raises(DuplicateEvents):
        merge_files([*tmb_run, overlap], out)

    # --skip-bad: the later input of the two is the one left out, wherever it stands
    result = cli("merge", *tmb_run, overlap, "-o", out, "--skip-bad", "--json")
    assert result.code == 0, result.err
    assert [s["file"] for s in result.json()["skipped"]] == [str(overlap)]
    assert read_event_list(out) == concat_events(read_event_list, tmb_run)
    assert [s["file_name"] for s in read_sidecar(out)["Merge.skipped"]] == [overlap.name]

    reordered = [tmb_run[0], overlap, *tmb_run[1:]]
    result = cli("merge", *reordered, "-o", out, "--skip-bad", "--force", "--json")
    assert result.code == 0, result.err
    assert [s["file"] for s in result.json()["skipped"]] == [str(tmb_run[2])]
    assert read_event_list(out) == concat_events(
        read_event_list, [p for p in reordered if p != tmb_run[2]]
    )


def test_byte_copy_under_another_name(cli, tmb_run, out_dir, read_event_list, leftovers):
    """A copy has the same UUID: caught as the same file content, in every mode."""
    copy = tmb_run[0].parent / file_name(RUN, 20)
    shutil.copyfile(tmb_run[1], copy)
    out = out_dir / "m.tmb"
    for mode in MODES:
        result = cli("merge", *tmb_run, copy, "-o", out, "--mode", mode)
        assert result.code == 6, result.err
        assert (
            str(copy) in result.err
            and str(tmb_run[1]) in result.err
            and "same file content" in result.err
        )
        assert_nothing_written(out, leftovers)
    result = cli("merge", *tmb_run, copy, "-o", out, "--skip-bad", "--json")
    assert result.code == 0, result.err
    assert [s["file"] for s in result.json()["skipped"]] == [str(copy)]
    assert read_event_list(out) == concat_events(read_event_list, tmb_run)


def test_duplicate_event_inside_one_input(
    cli, tmb_run, out_dir, tmp_path, read_event_list, leftovers
):
    doubled = tmp_path / "doubled.tmb"
    with TmbWriter(doubled, metadata={"runs": [[RUN, 0, "physics"]]}, fsync=False) as writer:
        for event in (10**6, 10**6 + 1, 10**6 + 2, 10**6 + 1, 10**6 + 3):
            writer.write_event(RUN, event, bytes([event % 256]) * 64)
    out = out_dir / "m.tmb"
    # doubled.tmb has no sidecar: safe mode would refuse it for that, so crosschecks are off
    result = cli("merge", tmb_run[0], doubled, "-o", out, "--metadata", "none")
    assert result.code == 6, result.err
    assert (
        str(doubled) in result.err and f"event {10**6 + 1}" in result.err and "itself" in result.err
    )
    assert_nothing_written(out, leftovers)
    result = cli("merge", tmb_run[0], doubled, "-o", out, "--skip-bad", "--metadata", "none")
    assert result.code == 0, result.err
    assert read_event_list(out) == read_event_list(tmb_run[0])


# -- deep mode decodes what the digests cannot see ------------------------------------------------


def _rewrite_payload_with_valid_digests(path, block: int) -> None:
    """Change one payload byte of an uncompressed (codec none) block, then recompute the block's
    digests in its header and in the index, the index digest and the trailer: every stored digest
    agrees, only the event's payload digest in the index no longer matches its bytes."""
    with engine.open_file(path) as reader:
        blocks = reader.blocks.copy()
        events = reader.events
        trailer = reader.trailer
        entry = blocks[block]
        offset, length = int(entry["offset"]), int(entry["compressed_length"])
        data = bytearray(path.read_bytes())
        start = offset + BLOCK_HEADER_SIZE
        data[start + RECORD_HEADER_SIZE + 7] ^= 0x5A  # inside the block's first payload
        digest = xxh3_64(bytes(data[start : start + length]))
        header = BlockHeader(
            int(entry["codec"]),
            length,
            int(entry["uncompressed_length"]),
            int(entry["event_count"]),
            digest,
            digest,
        )
        data[offset:start] = pack_block_header(header)
        blocks[block]["compressed_digest"] = digest
        blocks[block]["uncompressed_digest"] = digest
        index = pack_index(blocks, events)
    assert len(index) == trailer.index_length
    data[trailer.index_offset : trailer.index_offset + len(index)] = index
    data[-TRAILER_SIZE:] = pack_trailer(
        Trailer(
            trailer.index_offset,
            len(index),
            xxh3_64(index),
            trailer.event_count,
            trailer.block_count,
        )
    )
    path.write_bytes(bytes(data))


def test_only_deep_mode_decodes_events(tmb_file_factory, tmb_run, tmp_path, out_dir, leftovers):
    forged = tmb_file_factory(
        tmp_path / "forged" / file_name(RUN, 30),
        partition=30,
        first_event=10**7,
        codec="none",
        sidecar=False,
    ).path
    _rewrite_payload_with_valid_digests(forged, block=1)
    assert verify_file(forged, metadata="none").ok
    assert not verify_file(forged, deep=True, metadata="none").ok

    out = out_dir / "m.tmb"
    with pytest.raises(ChecksumMismatch) as caught:
        merge_files(
            [tmb_run[0], forged], out, MergeSpec(mode="deep", metadata="none")
        )  # forged has no sidecar
    assert caught.value.path == str(forged) and caught.value.region == "block 1"
    assert "payload digest" in str(caught.value)
    assert_nothing_written(out, leftovers)
    # fast and safe modes check stored digests and index agreement only, by design
    for mode in ("fast", "safe"):
        merge_files([tmb_run[0], forged], out, MergeSpec(mode=mode, force=True, metadata="none"))
        assert out.exists()


# -- the output's checksum is proven from its own bytes -----------------------------------------


@pytest.mark.parametrize("mode", ["safe", "deep"])
def test_output_adler32_is_recomputed_from_the_bytes_read_back(
    mode, tmb_run, out_dir, leftovers, monkeypatch
):
    """The writer combines the per-block adler32s the reader computed instead of hashing the bytes
    again; if one ever disagreed with the bytes written, the post-merge check, which hashes the
    output as read back, must refuse the output."""
    from engine.readers.tmb import TmbReader

    real = TmbReader.iter_blocks

    def one_wrong(self, adler=None, **kwargs):
        for block in real(self, adler, **kwargs):
            if block.adler32 is not None and self.path == tmb_run[1] and block.number == 1:
                block = block._replace(adler32=block.adler32 ^ 0x10001)
            yield block

    monkeypatch.setattr(TmbReader, "iter_blocks", one_wrong)
    out = out_dir / "m.tmb"
    with pytest.raises(ChecksumMismatch, match="adler32 read back differs"):
        merge_files(tmb_run[:3], out, MergeSpec(mode=mode))
    assert_nothing_written(out, leftovers)


@pytest.mark.parametrize("mode", ["safe", "deep"])
def test_damage_to_the_output_after_writing_is_caught_by_the_read_back(
    mode, tmb_run, out_dir, leftovers, monkeypatch
):
    """Safe and deep modes read every block back from the output file as it is written: a byte
    changed on its way to the file (here: rewritten just after the block) is refused, reported
    against the input the block came from, and nothing is published."""
    real = TmbWriter.copy_block
    damaged = {}

    def copy_then_damage(self, header, stored, events, adler32=None):
        offset = real(self, header, stored, events, adler32)
        if self.block_count == 3:
            where = offset + BLOCK_HEADER_SIZE + header.compressed_length // 2
            fd = os.open(self.tmp_path, os.O_RDWR)
            try:
                os.pwrite(fd, bytes([os.pread(fd, 1, where)[0] ^ 0x04]), where)
            finally:
                os.close(fd)
            damaged["at"] = where
        return offset

    monkeypatch.setattr(TmbWriter, "copy_block", copy_then_damage)
    out = out_dir / "m.tmb"
    with pytest.raises(ChecksumMismatch) as caught:
        merge_files(tmb_run[:3], out, MergeSpec(mode=mode))
    assert damaged, "the damage was never made"
    assert "found reading back block 2 of the merged output" in str(caught.value)
    assert caught.value.path == str(tmb_run[0])
    assert_nothing_written(out, leftovers)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["safe", "deep"])
def test_a_read_error_while_reading_back_fails_cleanly(
    mode, tmb_run, out_dir, leftovers, monkeypatch
):
    """An I/O error reading the output back (EIO) is an output error naming the block, not a hang
    of the writer on a read-back that died, and nothing is published."""
    import errno

    from engine.errors import OutputError

    real_preadv, real_copy, written = os.preadv, TmbWriter.copy_block, []

    def copy_block(self, *args, **kwargs):  # where each block of the output went
        written.append(real_copy(self, *args, **kwargs))
        return written[-1]

    def failing(fd, buffers, offset):
        # the output's block 1, read back (decoder threads read in any order: choose it by offset)
        if (
            ".tmbpart-" in os.readlink(f"/proc/self/fd/{fd}")
            and len(written) > 1
            and offset == written[1]
        ):
            raise OSError(errno.EIO, "Input/output error")
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(TmbWriter, "copy_block", copy_block)
    monkeypatch.setattr(os, "preadv", failing)  # the read-back reads through engine.source
    out = out_dir / "m.tmb"
    with pytest.raises(OutputError) as caught:
        merge_files(tmb_run, out, MergeSpec(mode=mode))
    assert "cannot read the output back: Input/output error" in str(caught.value)
    assert caught.value.region == "block 1" and caught.value.exit_code == 7
    assert_nothing_written(out, leftovers)


@pytest.mark.parametrize("mode", ["safe", "deep"])
@pytest.mark.parametrize("column", ["compressed_digest", "codec", "offset"])
def test_an_index_entry_that_disagrees_with_its_block_is_refused(
    mode, column, tmb_run, out_dir, leftovers, monkeypatch
):
    """The output's index is checked against the blocks read back, field by field: a writer that
    listed a block wrongly would not get its output published."""
    real = TmbWriter._record_block

    def misrecorded(self, offset, header, events):
        real(self, offset, header, events)
        if len(self._blocks) == 2:
            offset, first_event, header = self._blocks[1]
            if column == "offset":
                offset ^= 1
            else:
                header = header._replace(**{column: getattr(header, column) ^ 1})
            self._blocks[1] = (offset, first_event, header)

    monkeypatch.setattr(TmbWriter, "_record_block", misrecorded)
    out = out_dir / "m.tmb"
    with pytest.raises(IntegrityError) as caught:
        merge_files(tmb_run[:2], out, MergeSpec(mode=mode))
    assert caught.value.path == str(out)
    assert_nothing_written(out, leftovers)
