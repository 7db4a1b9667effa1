"""The behaviour every queryable catalogue backend must have, written once.

Subclass ``CatalogContract`` in a backend's test module and give it a ``catalog`` fixture
returning an empty catalogue of that backend (the zarr ``StoreTests`` pattern).  The class
name does not start with ``Test`` so pytest collects only the subclasses.
"""

from __future__ import annotations

import pytest

from bindings.catalog import ALREADY_DECLARED, DECLARED
from bindings.catalog.base import placeholder_metadata
from engine.errors import DeclarationConflict, FileNotDeclared, MetadataError, UnknownParent

RAW = {
    "file_name": "raw_0000178000_p003.raw",
    "file_size": 750000000,
    "checksum": ["adler32:11112222"],
    "runs": [[178000, 0, "physics"]],
    "data_tier": "raw",
    "file_format": "raw",
}


def unmerged(number: int = 3, *, run: int = 178000, **changes) -> dict:
    """Sidecar-like metadata of unmerged TMB partition ``number`` of ``run``."""
    md = {
        "file_name": f"tmb_{run:010d}_p{number:03d}.tmb",
        "file_size": 51234567 + number,
        "checksum": [f"adler32:0a1b{number:04x}"],
        "event_count": 3000,
        "first_event": number * 3000 + 1,
        "last_event": number * 3000 + 3000,
        "runs": [[run, 0, "physics"]],
        "data_tier": "unmerged-thumbnail",
        "file_format": "tmb",
        "file_type": "importedDetector",
        "parents": [{"file_name": f"raw_{run:010d}_p{number:03d}.raw"}],
        "application": {"family": "reco", "name": "d0reco", "version": "p17.09.03"},
        "start_time": "2026-11-28T10:00:00+00:00",
        "end_time": "2026-11-28T11:30:00+00:00",
        "group": "dzero",
        "data_stream": "physics",
    }
    md.update(changes)
    return md


def raw(number: int = 3, *, run: int = 178000) -> dict:
    return dict(RAW, file_name=f"raw_{run:010d}_p{number:03d}.raw", runs=[[run, 0, "physics"]])


class CatalogContract:
    """Declaration semantics and look-ups, the same for every backend."""

    def test_declare_then_get_gives_the_sam_record(self, catalog):
        catalog.declare(raw())
        result = catalog.declare(unmerged(**{"Reco.pass": 2}))
        assert result.file_name == "tmb_0000178000_p003.tmb"
        assert result.status == DECLARED
        assert isinstance(result.file_id, int)
        record = catalog.get("tmb_0000178000_p003.tmb")
        expected = unmerged(**{"Reco.pass": 2})
        for key, value in expected.items():
            assert record[key] == value, key
        assert record["file_id"] == result.file_id

    def test_enstore_on_input_is_stored_as_adler32(self, catalog):
        catalog.declare(
            {"file_name": "big.raw", "file_size": 3690769125, "checksum": ["enstore:1952172898"]}
        )
        assert catalog.get("big.raw")["checksum"] == ["adler32:03d6cb63"]

    def test_same_name_size_and_adler32_is_already_declared(self, catalog):
        catalog.declare(raw())
        first = catalog.declare(unmerged())
        again = catalog.declare(unmerged(event_count=2999, checksum=["adler32:A1B0003"]))
        assert again.status == ALREADY_DECLARED
        assert again.file_id == first.file_id
        assert catalog.get(first.file_name)["event_count"] == 3000  # the first record is kept

    @pytest.mark.parametrize(
        "change, difference",
        [
            ({"file_size": 51234571}, "file_size (expected 51234570, found 51234571)"),
            (
                {"checksum": ["adler32:0a1b0004"]},
                "adler32 (expected adler32:0a1b0003, found adler32:0a1b0004)",
            ),
            ({"checksum": []}, "adler32 (expected adler32:0a1b0003, found none)"),
        ],
    )
    def test_different_bytes_under_the_same_name_conflict(self, catalog, change, difference):
        catalog.declare(raw())
        catalog.declare(unmerged())
        with pytest.raises(DeclarationConflict) as caught:
            catalog.declare(unmerged(**change))
        assert (
            str(caught.value)
            == f"tmb_0000178000_p003.tmb: declared already with a different {difference}"
        )
        assert caught.value.exit_code == 8
        assert catalog.get("tmb_0000178000_p003.tmb")["file_size"] == 51234570

    def test_unknown_parents_are_named_and_nothing_is_declared(self, catalog):
        md = unmerged(
            parents=[
                {"file_name": "raw_a.raw"},
                {"file_name": "raw_b.raw"},
                {"file_name": "known.raw"},
            ]
        )
        catalog.declare(dict(RAW, file_name="known.raw"))
        with pytest.raises(UnknownParent) as caught:
            catalog.declare(md)
        assert "raw_a.raw, raw_b.raw" in str(caught.value)
        assert "known.raw" not in str(caught.value)
        assert str(caught.value).startswith("tmb_0000178000_p003.tmb: ")
        assert not catalog.exists("tmb_0000178000_p003.tmb")

    def test_get_of_an_unknown_file(self, catalog):
        with pytest.raises(FileNotDeclared) as caught:
            catalog.get("nothing.tmb")
        assert str(caught.value) == "nothing.tmb: not declared in the catalogue"
        assert isinstance(caught.value, KeyError) and caught.value.exit_code == 8

    def test_exists(self, catalog):
        assert not catalog.exists("raw_0000178000_p003.raw")
        catalog.declare(raw())
        assert catalog.exists("raw_0000178000_p003.raw")

    def test_lineage(self, catalog):
        for n in (1, 2, 3):
            catalog.declare(raw(n))
            catalog.declare(unmerged(n))
        merged = {
            "file_name": "tmb_0000178000_mrg_001-003.tmb",
            "file_size": 153000000,
            "checksum": ["adler32:00ab0001"],
            "runs": [[178000, 0, "physics"]],
            "data_tier": "thumbnail",
            "parents": [{"file_name": unmerged(n)["file_name"]} for n in (3, 1, 2)],
        }
        catalog.declare(merged)
        assert catalog.parents(merged["file_name"]) == [unmerged(n)["file_name"] for n in (3, 1, 2)]
        assert catalog.children(unmerged(1)["file_name"]) == [merged["file_name"]]
        assert catalog.children(raw(2)["file_name"]) == [unmerged(2)["file_name"]]
        assert catalog.children(merged["file_name"]) == []
        assert catalog.parents(raw(1)["file_name"]) == []
        with pytest.raises(FileNotDeclared):
            catalog.children("nothing.tmb")
        with pytest.raises(FileNotDeclared):
            catalog.parents("nothing.tmb")

    def test_files_by_run_and_tier(self, catalog):
        for run in (178000, 178001):
            for n in (2, 1):
                catalog.declare(raw(n, run=run))
                catalog.declare(unmerged(n, run=run))
        catalog.declare(
            {
                "file_name": "two_runs.tmb",
                "file_size": 1,
                "data_tier": "thumbnail",
                "runs": [[178001, 0, "physics"], [178002, 0, "physics"]],
            }
        )
        assert catalog.files(run=178000, data_tier="unmerged-thumbnail") == [
            "tmb_0000178000_p001.tmb",
            "tmb_0000178000_p002.tmb",
        ]
        assert catalog.files(run=178001) == [
            "raw_0000178001_p001.raw",
            "raw_0000178001_p002.raw",
            "tmb_0000178001_p001.tmb",
            "tmb_0000178001_p002.tmb",
            "two_runs.tmb",
        ]
        assert catalog.files(run=178002) == ["two_runs.tmb"]
        assert catalog.files(data_tier="thumbnail") == ["two_runs.tmb"]
        assert catalog.files(run=999) == []

    def test_declaration_needs_a_size(self, catalog):
        with pytest.raises(MetadataError, match="file_size: missing"):
            catalog.declare({"file_name": "sizeless.tmb"})
        assert not catalog.exists("sizeless.tmb")

    def test_bad_metadata_is_refused_before_anything_is_stored(self, catalog):
        with pytest.raises(MetadataError, match="^start_time"):
            catalog.declare(dict(RAW, start_time="2026-11-28 10:00"))
        assert not catalog.exists(RAW["file_name"])

    def test_placeholders(self, catalog):
        first = catalog.declare(placeholder_metadata("raw_x.raw"))
        assert first.status == DECLARED
        assert catalog.declare(placeholder_metadata("raw_x.raw")).status == ALREADY_DECLARED
        with pytest.raises(DeclarationConflict, match="placeholder"):
            catalog.declare(dict(RAW, file_name="raw_x.raw"))
        catalog.declare(raw())
        assert catalog.declare(placeholder_metadata(raw()["file_name"])).status == ALREADY_DECLARED
        record = catalog.get("raw_x.raw")
        assert "file_size" not in record and record["Catalog.placeholder"]
