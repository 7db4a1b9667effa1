"""engine.metadata: sidecars, normalization of SAM metadata, crosscheck facts, merged metadata."""

from __future__ import annotations

import copy
import json
import os
from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.checksums import ADLER_MOD, adler32_to_enstore
from engine.errors import InconsistentInputs, MetadataError, MetadataMismatch, OutputError
from engine.metadata import (
    AGREEING_KEYS,
    FileFacts,
    check_agreement,
    expected_facts,
    merged_metadata,
    normalize_metadata,
    now_iso,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)

SAMPLE = {
    "file_name": "tmb_0000178000_p003.tmb",
    "file_size": 51234567,
    "checksum": ["adler32:0a1b2c3d"],
    "event_count": 3000,
    "first_event": 9001,
    "last_event": 12000,
    "runs": [[178000, 0, "physics"]],
    "data_tier": "unmerged-thumbnail",
    "file_format": "tmb",
    "file_type": "importedDetector",
    "parents": [{"file_name": "raw_0000178000_p003.raw"}],
    "application": {"family": "reco", "name": "d0reco", "version": "p17.09.03"},
    "start_time": "2026-11-28T10:00:00+00:00",
    "end_time": "2026-11-28T11:30:00+00:00",
    "group": "dzero",
    "data_stream": "physics",
}


def sample(**changes) -> dict:
    md = copy.deepcopy(SAMPLE)
    for key, value in changes.items():
        if value is None:
            md.pop(key, None)
        else:
            md[key] = value
    return md


def partition(number: int, **changes) -> dict:
    """The sidecar of partition ``number`` of run 178000."""
    return sample(
        file_name=f"tmb_0000178000_p{number:03d}.tmb",
        parents=[{"file_name": f"raw_0000178000_p{number:03d}.raw"}],
        first_event=number * 3000 + 1,
        last_event=number * 3000 + 3000,
        **changes,
    )


# --- sidecars -------------------------------------------------------------------------------


def test_sidecar_path_appends_json_to_the_whole_name(tmp_path):
    assert sidecar_path(tmp_path / "tmb_1.tmb") == tmp_path / "tmb_1.tmb.json"
    assert str(sidecar_path("dir/run.1.tmb")) == "dir/run.1.tmb.json"


def test_read_sidecar_absent_is_none(tmp_path):
    assert read_sidecar(tmp_path / "missing.tmb") is None


def test_sidecar_round_trip(tmp_path):
    data = tmp_path / "tmb_1.tmb"
    written = write_sidecar(data, SAMPLE)
    assert written == tmp_path / "tmb_1.tmb.json"
    assert read_sidecar(data) == SAMPLE
    text = written.read_text()
    assert text.endswith("\n") and text.startswith("{\n  ")  # pretty, one key a line


def test_write_sidecar_replaces_and_leaves_no_temporary(tmp_path):
    data = tmp_path / "tmb_1.tmb"
    write_sidecar(data, {"file_name": "old"})
    write_sidecar(data, {"file_name": "new"})
    assert read_sidecar(data) == {"file_name": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmb_1.tmb.json"]


def test_write_sidecar_honours_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_sidecar(tmp_path / "f", {"file_name": "f"})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_write_sidecar_failure_keeps_the_old_sidecar(tmp_path, monkeypatch):
    data = tmp_path / "tmb_1.tmb"
    write_sidecar(data, {"file_name": "old"})

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OutputError, match="No space left on device"):
        write_sidecar(data, {"file_name": "new"})
    assert read_sidecar(data) == {"file_name": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmb_1.tmb.json"]


def test_write_sidecar_unserialisable_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_sidecar(tmp_path / "f", {"file_name": "f", "Bad.value": object()})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "text, words",
    [("{not json", "not valid JSON"), ("[1, 2]", "JSON list, not an object"), ('"x"', "JSON str")],
)
def test_read_sidecar_malformed_names_the_file(tmp_path, text, words):
    (tmp_path / "f.tmb.json").write_text(text)
    with pytest.raises(MetadataError) as caught:
        read_sidecar(tmp_path / "f.tmb")
    assert str(tmp_path / "f.tmb.json") in str(caught.value)
    assert words in str(caught.value)
    assert caught.value.exit_code == 4


# --- normalization --------------------------------------------------------------------------


def test_sample_sidecar_is_already_canonical():
    assert normalize_metadata(SAMPLE) == SAMPLE


def test_normalize_returns_a_copy():
    md = sample(runs=[(178000, 0, "physics")])
    out = normalize_metadata(md)
    out["runs"].append([1, 1, "x"])
    assert md["runs"] == [(178000, 0, "physics")]


def test_enstore_converts_with_the_size_in_the_dict():
    md = normalize_metadata(
        {"file_name": "f", "file_size": 3690769125, "checksum": ["enstore:1952172898"]}
    )
    assert md["checksum"] == ["adler32:03d6cb63"]


def test_enstore_converts_with_the_size_as_argument():
    md = normalize_metadata(
        {"file_name": "f", "checksum": ["enstore:1952172898"]}, file_size=3690769125
    )
    assert md["checksum"] == ["adler32:03d6cb63"]
    assert "file_size" not in md


def test_enstore_without_size_is_an_error():
    with pytest.raises(MetadataError, match=r"^checksum: .*file size"):
        normalize_metadata({"file_name": "f", "checksum": ["enstore:1952172898"]})


def test_adler32_is_zero_padded_and_lowercased_and_deduplicated():
    md = normalize_metadata(
        {
            "file_name": "f",
            "file_size": 3690769125,
            "checksum": ["adler32:3D6CB63", "enstore:1952172898", "md5:ab"],
        }
    )
    assert md["checksum"] == ["adler32:03d6cb63", "md5:ab"]


@pytest.mark.parametrize(
    "checksum",
    [
        "adler32:fff10000",
        "adler32:0000fff1",
        "adler32:ffffffff",
        "enstore:4294967295",
        "enstore:65521",
    ],
)
def test_unrepresentable_adler32_is_rejected(checksum):
    with pytest.raises(MetadataError, match=r"^checksum: .*not a possible adler32"):
        normalize_metadata({"file_name": "f", "file_size": 10, "checksum": [checksum]})


def test_largest_representable_adler32_is_accepted():
    md = normalize_metadata({"file_name": "f", "checksum": ["adler32:fff0fff0"]})
    assert md["checksum"] == ["adler32:fff0fff0"]


def test_checksums_that_disagree_are_rejected():
    with pytest.raises(MetadataError, match="^checksum: .*disagrees"):
        normalize_metadata(
            {
                "file_name": "f",
                "file_size": 3690769125,
                "checksum": ["adler32:03d6cb64", "enstore:1952172898"],
            }
        )


@given(
    s1=st.integers(0, ADLER_MOD - 1),
    s2=st.integers(0, ADLER_MOD - 1),
    size=st.integers(0, 2**42),
)
def test_enstore_form_normalizes_to_the_same_adler32(s1, s2, size):
    adler = (s2 << 16) | s1
    enstore = adler32_to_enstore(adler, size)
    md = normalize_metadata(
        {"file_name": "f", "file_size": size, "checksum": [f"enstore:{enstore}"]}
    )
    assert md["checksum"] == [f"adler32:{adler:08x}"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("file_name", 12),
        ("file_name", ""),
        ("file_name", "dir/file.tmb"),
        ("file_size", "51234567"),
        ("file_size", -1),
        ("file_size", True),
        ("file_size", 5.0),
        ("event_count", -3),
        ("event_count", 2**63),
        ("runs", [[2**64, 0, "physics"]]),
        ("first_event", "9001"),
        ("last_event", 1.5),
        ("runs", "178000"),
        ("runs", [[178000, 0]]),
        ("runs", [[178000, "0", "physics"]]),
        ("runs", [[178000, 0, 7]]),
        ("parents", [{"name": "raw"}]),
        ("parents", "raw_1.raw"),
        ("parents", [{"file_name": "a"}, "a"]),
        ("checksum", [123]),
        ("checksum", ["adler32"]),
        ("checksum", ["crc:1", "crc:2"]),
        ("start_time", "2026-11-28T10:00:00"),
        ("start_time", "yesterday"),
        ("end_time", 1732780000),
        ("application", {"family": "reco", "name": "d0reco"}),
        ("application", {"family": "reco", "name": "d0reco", "version": 17}),
        ("application", {"family": "reco", "name": "d0reco", "version": "p17", "extra": "x"}),
        ("application", "d0reco p17"),
        ("data_tier", 3),
        ("group", ["dzero"]),
        ("event_cout", 3000),
    ],
)
def test_bad_field_is_named_in_a_one_line_error(field, value):
    with pytest.raises(MetadataError) as caught:
        normalize_metadata(sample(**{field: value}))
    message = str(caught.value)
    assert message.split(":")[0].split("[")[0].split(".")[0] == field
    assert "\n" not in message


def test_missing_file_name_is_an_error():
    with pytest.raises(MetadataError, match="^file_name: missing"):
        normalize_metadata(sample(file_name=None))


def test_not_a_dict_is_an_error():
    with pytest.raises(MetadataError, match="JSON object"):
        normalize_metadata([SAMPLE])


def test_first_event_after_last_event_is_an_error():
    with pytest.raises(MetadataError, match="^first_event"):
        normalize_metadata(sample(first_event=12001))


def test_start_after_end_is_an_error():
    with pytest.raises(MetadataError, match="^start_time"):
        normalize_metadata(sample(start_time="2026-11-28T12:00:00+00:00"))


def test_times_are_compared_across_offsets():
    md = sample(start_time="2026-11-28T11:00:00+02:00", end_time="2026-11-28T10:00:00+00:00")
    assert normalize_metadata(md)["start_time"] == "2026-11-28T11:00:00+02:00"


def test_z_suffix_becomes_an_explicit_offset():
    md = normalize_metadata(sample(start_time="2026-11-28T10:00:00Z"))
    assert md["start_time"] == "2026-11-28T10:00:00+00:00"


def test_bare_parent_names_and_run_tuples_are_canonicalized():
    md = normalize_metadata(sample(parents=["raw_1.raw"], runs=[(178000, 0, "physics")]))
    assert md["parents"] == [{"file_name": "raw_1.raw"}]
    assert md["runs"] == [[178000, 0, "physics"]]


def test_free_form_parameters_pass_and_unknown_fields_pass_only_when_not_strict():
    assert normalize_metadata(sample(**{"Merge.mode": "fast"}))["Merge.mode"] == "fast"
    with pytest.raises(MetadataError, match="^lum_block_ranges: not a SAM metadata field"):
        normalize_metadata(sample(lum_block_ranges=[]))
    assert normalize_metadata(sample(lum_block_ranges=[]), strict=False)["lum_block_ranges"] == []


def test_size_argument_disagreeing_with_the_dict_is_a_mismatch():
    with pytest.raises(MetadataMismatch) as caught:
        normalize_metadata(SAMPLE, file_size=51234568)
    assert caught.value.expected == 51234567 and caught.value.actual == 51234568
    assert caught.value.exit_code == 6


@given(
    st.fixed_dictionaries(
        {
            "file_name": st.from_regex(r"\A[a-z0-9_.]{1,20}\Z").filter(
                lambda s: s not in (".", "..")
            ),
            "file_size": st.integers(0, 2**40),
            "checksum": st.builds(
                lambda a, b: [f"adler32:{a << 16 | b:x}"],
                st.integers(0, ADLER_MOD - 1),
                st.integers(0, ADLER_MOD - 1),
            ),
            "runs": st.lists(
                st.tuples(
                    st.integers(0, 10**7), st.integers(0, 99), st.sampled_from(["physics", "test"])
                ),
                max_size=3,
            ),
            "parents": st.lists(st.from_regex(r"\Araw_[0-9]{1,6}\.raw\Z"), unique=True, max_size=4),
            "start_time": st.datetimes(timezones=st.just(datetime.now().astimezone().tzinfo)).map(
                datetime.isoformat
            ),
        }
    )
)
def test_normalization_is_idempotent(md):
    once = normalize_metadata(md)
    assert normalize_metadata(once) == once
    assert json.loads(json.dumps(once)) == once


# --- crosscheck facts -----------------------------------------------------------------------


def test_expected_facts_of_the_sample():
    assert expected_facts(SAMPLE) == FileFacts(51234567, 0x0A1B2C3D, 3000)


def test_expected_facts_converts_enstore():
    facts = expected_facts(
        {
            "file_name": "f",
            "file_size": 3690769125,
            "event_count": 7,
            "checksum": ["enstore:1952172898"],
        }
    )
    assert facts == FileFacts(3690769125, 0x03D6CB63, 7)


def test_expected_facts_and_agreement_accept_catalogue_records_with_more_fields():
    record = sample(file_id=12, create_date="2026-11-28T12:00:00+00:00", lum_block_ranges=[[1, 9]])
    assert expected_facts(record) == FileFacts(51234567, 0x0A1B2C3D, 3000)
    assert check_agreement([("a", record), ("b", partition(2))])["run_type"] == "physics"


def test_expected_facts_without_checksum_has_no_adler32():
    assert expected_facts(sample(checksum=None)).adler32 is None


@pytest.mark.parametrize("field", ["file_size", "event_count"])
def test_expected_facts_needs_size_and_event_count(field):
    with pytest.raises(MetadataError, match=f"^{field}: missing"):
        expected_facts(sample(**{field: None}))


# --- agreement and merged metadata ----------------------------------------------------------


def test_agreeing_inputs_give_the_shared_values():
    inputs = [("a.tmb", partition(1)), ("b.tmb", partition(2))]
    assert check_agreement(inputs) == {
        "data_tier": "unmerged-thumbnail",
        "file_format": "tmb",
        "application.family": "reco",
        "application.name": "d0reco",
        "application.version": "p17.09.03",
        "run_type": "physics",
        "data_stream": "physics",
    }
    assert set(check_agreement(inputs)) <= set(AGREEING_KEYS)


@pytest.mark.parametrize(
    "key, change, first, second",
    [
        (
            "application.version",
            {"application": {"family": "reco", "name": "d0reco", "version": "p17.09.04"}},
            "'p17.09.03'",
            "'p17.09.04'",
        ),
        (
            "application.name",
            {"application": {"family": "reco", "name": "d0reco2", "version": "p17.09.03"}},
            "'d0reco'",
            "'d0reco2'",
        ),
        ("data_tier", {"data_tier": "thumbnail"}, "'unmerged-thumbnail'", "'thumbnail'"),
        ("run_type", {"runs": [[178000, 0, "test"]]}, "'physics'", "'test'"),
        ("file_format", {"file_format": "root"}, "'tmb'", "'root'"),
        ("data_stream", {"data_stream": "express"}, "'physics'", "'express'"),
        ("data_stream", {"data_stream": None}, "'physics'", "nothing"),
    ],
)
def test_disagreement_names_key_values_and_files(key, change, first, second):
    inputs = [("a.tmb", partition(1)), ("b.tmb", partition(2)), ("c.tmb", partition(3, **change))]
    with pytest.raises(InconsistentInputs) as caught:
        check_agreement(inputs)
    assert str(caught.value) == f"inputs disagree on {key}: {first} in a.tmb but {second} in c.tmb"
    assert caught.value.exit_code == 6


def test_keys_absent_everywhere_are_left_out():
    inputs = [("a", partition(1, data_stream=None)), ("b", partition(2, data_stream=None))]
    assert "data_stream" not in check_agreement(inputs)


def test_an_input_with_two_run_types_disagrees_with_itself():
    with pytest.raises(InconsistentInputs, match="^a.tmb: runs of one input disagree on run_type"):
        check_agreement(
            [("a.tmb", partition(1, runs=[[178000, 0, "physics"], [178000, 1, "test"]]))]
        )


def test_no_inputs_is_inconsistent():
    with pytest.raises(InconsistentInputs):
        check_agreement([])


def test_malformed_input_metadata_names_the_input():
    with pytest.raises(MetadataError, match="^b.tmb: event_count"):
        check_agreement([("a.tmb", partition(1)), ("b.tmb", partition(2, event_count="many"))])


MERGE_ARGS = dict(
    file_name="tmb_0000178000_mrg_001-003.tmb",
    file_size=153000000,
    adler32=0x00AB0001,
    event_count=9000,
    first_event=3001,
    last_event=12000,
    runs=[[178000, 0, "physics"]],
    merge_mode="fast",
    application={"family": "merge", "name": "tmbmerge", "version": "0.1.0"},
    start_time="2026-11-29T01:00:00+00:00",
    end_time="2026-11-29T01:02:00+00:00",
)


def test_merged_metadata_has_every_sam_field():
    inputs = [(f"/data/in/tmb_0000178000_p{n:03d}.tmb", partition(n)) for n in (1, 2, 3)]
    md = merged_metadata(
        inputs,
        skipped=[{"file_name": "tmb_0000178000_p004.tmb", "reason": "truncated"}],
        **MERGE_ARGS,
    )
    assert md == {
        "file_name": "tmb_0000178000_mrg_001-003.tmb",
        "file_size": 153000000,
        "checksum": ["adler32:00ab0001"],
        "event_count": 9000,
        "first_event": 3001,
        "last_event": 12000,
        "runs": [[178000, 0, "physics"]],
        "data_tier": "thumbnail",
        "file_format": "tmb",
        "parents": [{"file_name": f"tmb_0000178000_p{n:03d}.tmb"} for n in (1, 2, 3)],
        "application": {"family": "merge", "name": "tmbmerge", "version": "0.1.0"},
        "start_time": "2026-11-29T01:00:00+00:00",
        "end_time": "2026-11-29T01:02:00+00:00",
        "data_stream": "physics",
        "group": "dzero",
        "file_type": "importedDetector",
        "Merge.mode": "fast",
        "Merge.input_count": 3,
        "Merge.skipped": [{"file_name": "tmb_0000178000_p004.tmb", "reason": "truncated"}],
    }
    assert normalize_metadata(md) == md


def test_merged_metadata_keeps_input_order_and_drops_disagreeing_group():
    inputs = [("z.tmb", partition(3)), ("a.tmb", partition(1, group="other"))]
    md = merged_metadata(inputs, data_tier="merged-thumbnail", **MERGE_ARGS)
    assert md["parents"] == [{"file_name": "z.tmb"}, {"file_name": "a.tmb"}]
    assert "group" not in md
    assert md["data_tier"] == "merged-thumbnail"
    assert md["Merge.skipped"] == []


def test_merged_metadata_refuses_disagreeing_inputs():
    inputs = [("a.tmb", partition(1)), ("b.tmb", partition(2, data_tier="raw"))]
    with pytest.raises(InconsistentInputs, match="data_tier"):
        merged_metadata(inputs, **MERGE_ARGS)


def test_merged_metadata_refuses_the_same_input_twice():
    with pytest.raises(MetadataError, match="^parents: a.tmb is listed twice"):
        merged_metadata([("a.tmb", partition(1)), ("x/a.tmb", partition(1))], **MERGE_ARGS)


def test_merged_metadata_checks_skipped_entries():
    with pytest.raises(MetadataError, match=r"^Merge.skipped\[0\]"):
        merged_metadata([("a.tmb", partition(1))], skipped=[{"file_name": "b.tmb"}], **MERGE_ARGS)


def test_now_iso_has_an_offset_and_is_now():
    text = now_iso()
    moment = datetime.fromisoformat(text)
    assert moment.tzinfo is not None
    assert abs(datetime.now().astimezone() - moment) < timedelta(seconds=5)
    assert normalize_metadata({"file_name": "f", "start_time": text})["start_time"] == text


@pytest.mark.parametrize("value", [7, {"adler32": "0000abcd"}, 1.5, True])
def test_a_checksum_that_is_not_a_list_is_a_metadata_error(value):
    """Found by the fuzzer: ``"checksum": 7`` in a sidecar made merge-run's planning raise
    TypeError."""
    from engine.checksums import adler32_from_checksums
    from engine.errors import MetadataError

    with pytest.raises(MetadataError, match="is not a list"):
        adler32_from_checksums(value)
