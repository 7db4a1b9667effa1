"""Certification histograms: what is read out of the payloads, the tests, and ``tmbmerge certify``.

1. The vectorized read-out equals a plain per-event parse of the payload layout (struct by
   struct), for every quantity, on generated files.
2. A payload that does not hold the layout its header announces is counted as malformed and
   kept out of the per-object histograms.
3. The stored form round-trips exactly; a binning that changed is not silently reused.
4. The chi-square test: a histogram against itself passes with p = 1, two different shapes fail.
5. ``tmbmerge certify`` on unmerged files and their real merge: certified, exit 0; on a merge
   that lost a file: fails with exit 6, naming the run; histograms are in the catalogue database.
6. ``merge-run --certify`` fills both samples around a real merge and judges the run.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from engine.certify import QUANTITIES, RunHistograms, chi2_test, fill_files, identical
from engine.certify.histograms import new_histogram
from engine.certify.quantities import BY_NAME, block_quantities
from engine.generate import EVENT_HEADER, HIT, TRACK

RUN = 178000


def parse_event(payload: bytes) -> dict[str, list]:
    """The quantities of one payload, read record by record with struct (the reference)."""
    (magic, version, run, event, trigger, hits, tracks, clusters, flags, crossing) = (
        struct.unpack_from("<HHIQIHHHHI", payload, 0)
    )
    out = {
        "event_kb": [len(payload) / 1000.0],
        "n_hits": [hits],
        "n_tracks": [tracks],
        "n_clusters": [clusters],
        "trigger_bit": [bit for bit in range(32) if trigger >> bit & 1],
    }
    at = EVENT_HEADER.itemsize
    hit_rows = [struct.unpack_from("<HHf", payload, at + 8 * i) for i in range(hits)]
    at += HIT.itemsize * hits
    track_rows = [struct.unpack_from("<6f", payload, at + 24 * i) for i in range(tracks)]
    at += TRACK.itemsize * tracks
    cluster_rows = [struct.unpack_from("<HHfff", payload, at + 16 * i) for i in range(clusters)]
    out["hit_adc"] = [h[1] for h in hit_rows]
    out["hit_time"] = [h[2] for h in hit_rows]
    for k, name in enumerate(("pt", "eta", "phi", "d0", "z0", "chi2")):
        out[f"track_{name}"] = [t[k] for t in track_rows]
    out["cluster_energy"] = [c[2] for c in cluster_rows]
    out["cluster_eta"] = [c[3] for c in cluster_rows]
    return out


def test_read_out_equals_a_per_event_parse(tmb_run, read_event_list):
    filled = fill_files(tmb_run[:2], run=RUN, sample="unmerged")
    reference = {q.name: new_histogram(q) for q in QUANTITIES}
    events = 0
    for path in tmb_run[:2]:
        for _, _, payload in read_event_list(path):
            events += 1
            for name, values in parse_event(payload).items():
                reference[name].fill(
                    np.asarray(values, dtype=np.float64 if name != "trigger_bit" else np.int64)
                )
    assert filled.events == events and filled.malformed == 0
    for q in QUANTITIES:
        assert np.array_equal(filled.counts(q.name), reference[q.name].values(flow=True)), q.name
    assert filled.histograms["track_pt"].sum(flow=True) > events  # several tracks per event
    assert filled.files == [p.name for p in tmb_run[:2]]


def _records(payloads: list[bytes]) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Record bytes of a block holding ``payloads`` (16-byte record headers), offsets and
    lengths."""
    out, offsets = bytearray(), []
    for i, payload in enumerate(payloads):
        out += struct.pack("<IQI", RUN, i + 1, len(payload))
        offsets.append(len(out))
        out += payload
    return bytes(out), np.array(offsets, np.uint64), np.array([len(p) for p in payloads], np.uint32)


def test_a_payload_that_breaks_its_layout_is_counted_as_malformed(tmb_run, read_event_list):
    good = read_event_list(tmb_run[0])[0][2]
    wrong_counts = bytearray(good)
    wrong_counts[20:22] = struct.pack("<H", 60000)  # hits: more than the payload holds
    wrong_magic = b"\x00\x00" + good[2:]
    records, offsets, lengths = _records([good, bytes(wrong_counts), wrong_magic, b"short"])
    found = block_quantities(records, offsets, lengths)
    assert found.events == 4 and found.malformed == 3
    assert len(found.values["event_kb"]) == 4  # the size of every event is still known
    assert list(found.values["n_hits"]) == parse_event(good)["n_hits"]
    assert len(found.values["track_pt"]) == len(parse_event(good)["track_pt"])


def test_stored_form_round_trips(tmb_run):
    filled = fill_files(tmb_run[:1], run=RUN, sample="merged")
    again = RunHistograms.from_record(filled.to_record())
    assert (again.run, again.sample, again.files, again.events) == (
        RUN,
        "merged",
        filled.files,
        filled.events,
    )
    for q in QUANTITIES:
        assert np.array_equal(again.counts(q.name), filled.counts(q.name))
    record = filled.to_record()
    record["histograms"]["track_pt"]["binning"]["bins"] = 7  # stored by an older binning
    assert "track_pt" not in RunHistograms.from_record(record).histograms


def test_identical_and_chi2_tests():
    rng = np.random.default_rng(1)
    q = BY_NAME["track_pt"]
    a, b, c = new_histogram(q), new_histogram(q), new_histogram(q)
    a.fill(rng.exponential(2.5, 20_000))
    b.fill(rng.exponential(2.5, 5_000))
    c.fill(rng.exponential(5.0, 20_000))
    counts = a.values(flow=True)
    assert identical("track_pt", counts, counts.copy()).passed
    changed = counts.copy()
    changed[5] += 1
    assert identical("track_pt", counts, changed).differing_bins == 1
    same = chi2_test("track_pt", counts, counts)
    assert same.passed and same.chi2 == 0 and same.p_value == pytest.approx(1.0)
    compatible = chi2_test("track_pt", counts, b.values(flow=True))
    assert compatible.passed and compatible.ndf > 10
    different = chi2_test("track_pt", counts, c.values(flow=True))
    assert not different.passed and different.p_value < 1e-6
    assert not chi2_test("track_pt", counts, np.zeros_like(counts)).passed


def test_certify_command_passes_a_merge_and_fails_one_that_lost_a_file(tmb_run, tmp_path, cli):
    from bindings.serve.store import CampaignStore

    catalog = f"sqlite:///{tmp_path / 'cat.db'}"
    merged = tmp_path / "merged"
    assert cli("merge-run", tmb_run[0].parent, "--out-dir", merged, "--quiet").code == 0
    done = cli("certify", tmb_run[0].parent, merged, "--catalog", catalog, "--json")
    assert done.code == 0, done.err
    report = done.json()
    assert {(f["run"], f["sample"], f["files"]) for f in report["filled"]} == {
        (RUN, "unmerged", len(tmb_run)),
        (RUN, "merged", 1),
    }
    assert report["runs"][0]["status"] == "certified"
    assert set(CampaignStore(catalog).histogram_records(RUN)) == {"unmerged", "merged"}

    lossy = tmp_path / "lossy"
    lossy.mkdir()
    assert cli("merge", *tmb_run[:-1], "-o", lossy / "tmb_0000178000_mrg.tmb", "--quiet").code == 0
    failed = cli("certify", lossy, "--catalog", catalog)  # replaces the stored merged sample
    assert failed.code == 6
    assert failed.err.startswith(
        f"tmbmerge: error: run {RUN}: merged histograms differ from unmerged ("
    )
    assert "Traceback" not in failed.err


def test_certify_refuses_a_non_sqlite_catalogue(tmb_run, cli):
    done = cli("certify", tmb_run[0], "--catalog", "exec:true")
    assert done.code == 2 and "sqlite catalogue" in done.err


def test_merge_run_certify_fills_both_samples_and_judges(tmb_run, tmp_path, cli):
    from bindings.serve.store import CampaignStore

    catalog = f"sqlite:///{tmp_path / 'cat.db'}"
    assert (
        cli("catalog", "import", tmb_run[0].parent, "--catalog", catalog, "--declare-parents").code
        == 0
    )
    done = cli(
        "merge-run",
        tmb_run[0].parent,
        "--out-dir",
        tmp_path / "out",
        "--certify",
        "--catalog",
        catalog,
        "--declare",
        "--quiet",
    )
    assert done.code == 0, done.err
    assert f"run {RUN}: certified (merged histograms identical to unmerged)" in done.out
    records = CampaignStore(catalog).histogram_records(RUN)
    assert records["unmerged"]["events"] == records["merged"]["events"] == 40 * len(tmb_run)
    assert len(records["unmerged"]["files"]) == len(tmb_run)
    as_json = cli(
        "merge-run",
        tmb_run[0].parent,
        "--out-dir",
        tmp_path / "out",
        "--certify",
        "--catalog",
        catalog,
        "--declare",
        "--json",
    )  # a rerun: outputs already there, judged again
    assert as_json.code == 0, as_json.err
    assert as_json.json()["certification"] == [
        {"run": RUN, "status": "certified", "detail": "merged histograms identical to unmerged"}
    ]


def test_merge_run_certify_needs_a_catalogue(tmb_run, tmp_path, cli):
    done = cli(
        "merge-run", tmb_run[0].parent, "--out-dir", tmp_path / "out", "--certify", "--catalog", ""
    )
    assert done.code == 2 and "--certify keeps the histograms in the catalogue" in done.err
    assert not (tmp_path / "out").exists()
