"""A merge and its catalogue (records, not merged twice, declaring), end to end, against sqlite.

The scenarios are written once, in ``MergeCatalogTests`` (the zarr ``StoreTests`` pattern, like
``catalog_contract.py``), and run against every backend: ``TestMergeWithSqlite`` here
(``sqlite:///<tmp>/cat.db``), ``TestMergeWithSamWeb`` in ``test_merge_catalog_samweb.py`` (the
local SAM web server).  A backend fixture gives the URL and a way to make the catalogue refuse
declarations for a while.

What is covered (the issue's "Done means" for the merge hook):

1. ``merge-run --declare`` declares every output with its metadata and lineage; journal and
   ``--json`` say ``declared``.
2. Declaring an output again is ``already declared``.
3. Another checksum, or another file under the output's name, is a ``DeclarationConflict``
   (exit 8); the output is left alone.
4. Inputs unknown to the catalogue are refused (exit 8, "not declared"); declaring an output
   whose parents are unknown is ``UnknownParent`` (exit 8).
5. Inputs merged once are refused by ``merge`` and ``merge-run`` elsewhere ("already merged
   into ..."), left out and reported with ``--skip-bad``; rerunning the same ``merge-run`` is not
   refused.
6. ``--expect-complete`` refuses a run with a catalogued partition missing from the inputs;
   other runs are merged.
7. A failed declaration keeps the verified output, retires nothing, is recorded in the journal;
   ``tmbmerge declare`` then succeeds and a rerun retires.
8. ``--retire-inputs`` (move, delete) only after declaring; usage errors; a retirement folder
   already holding the name.
9. A declarer plugin (entry point ``tmbmerge.declarers``) gets the merged metadata.
10. With ``--catalog`` the inputs' crosschecks use the catalogue, not sidecars.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
import zlib
from pathlib import Path

import pytest

from bindings.catalog import open_catalog
from engine.generate import file_name
from engine.metadata import read_sidecar, sidecar_path, write_sidecar
from engine.verify import verify_file

RUN = 178000
OTHER_RUN = 178001


# -- backends ----------------------------------------------------------------------------------


class SqliteBackend:
    """An embedded catalogue in the test's folder.  Refusing declarations: a trigger aborts every
    insert of a merged (``thumbnail``) file, as a catalogue refusing writes would."""

    def __init__(self, folder: Path):
        self.path = folder / "cat.db"
        self.url = f"sqlite://{self.path}"  # sqlite:///<tmp>/cat.db

    def refuse_declarations(self) -> None:
        with open_catalog(self.url):
            pass  # make sure the schema exists
        with sqlite3.connect(self.path) as db:
            db.execute(
                "CREATE TRIGGER refuse_merged BEFORE INSERT ON files WHEN NEW.data_tier = "
                "'thumbnail' BEGIN SELECT RAISE(ABORT, 'the catalogue refuses merged files "
                "today'); END"
            )

    def accept_declarations(self) -> None:
        with sqlite3.connect(self.path) as db:
            db.execute("DROP TRIGGER refuse_merged")


# -- helpers -----------------------------------------------------------------------------------


def catalog_import(cli, backend, folder) -> None:
    result = cli("catalog", "import", folder, "--declare-parents", "--catalog", backend.url)
    assert result.code == 0, result.err


def merge_run(cli, backend, folder, out_dir, *options):
    return cli(
        "merge-run",
        folder,
        "--out-dir",
        out_dir,
        "--catalog",
        backend.url,
        "--jobs",
        1,
        "--quiet",
        *options,
    )


def status(cli, out_dir) -> dict:
    result = cli("status", out_dir, "--json")
    assert result.code == 0, result.err
    return result.json()


def states(cli, out_dir) -> dict[str, str]:
    return {entry["name"]: entry["state"] for entry in status(cli, out_dir)["outputs"]}


def tmb_files(folder) -> list[str]:
    folder = Path(folder)
    return sorted(p.name for p in folder.glob("*.tmb")) if folder.is_dir() else []


def adler32_of(path) -> str:
    return f"adler32:{zlib.adler32(Path(path).read_bytes()):08x}"


def two_output_target(paths) -> int:
    """A target size that cannot hold the whole small run in one output, but can in two."""
    return sum(p.stat().st_size for p in paths) * 6 // 10


def input_names(output_report) -> list[str]:
    return [Path(i["file"]).name for i in output_report["inputs"] if i["accepted"]]


def catalogued_thumbnails(backend) -> list[str]:
    with open_catalog(backend.url) as catalog:
        return catalog.files(run=RUN, data_tier="thumbnail")


def assert_in_place(paths) -> None:
    for path in paths:
        assert path.is_file(), f"{path} was moved or deleted"
        assert sidecar_path(path).is_file(), f"the sidecar of {path} was moved or deleted"


PLUGIN = '''
import json
import os


class RecordingDeclarer:
    """Writes what it is asked to declare to $MERGE_CATALOG_PLUGIN_LOG, adds a site parameter."""

    def __init__(self, catalog):
        self.catalog = catalog

    def declare(self, metadata):
        with open(os.environ["MERGE_CATALOG_PLUGIN_LOG"], "a") as log:
            log.write(json.dumps(metadata) + "\\n")
        return self.catalog.declare(dict(metadata, **{"Site.name": "GridKa"}))


def make(catalog):
    return RecordingDeclarer(catalog)
'''


# -- the scenarios, for every backend ------------------------------------------------------------


class MergeCatalogTests:
    """Subclasses run these against the ``backend`` fixture of their module."""

    @pytest.fixture(autouse=True)
    def no_catalogue_from_the_environment(self, monkeypatch):
        monkeypatch.delenv("TMBMERGE_CATALOG", raising=False)

    @pytest.fixture
    def declarer_plugin(self, tmp_path, monkeypatch) -> Path:
        """A distribution on sys.path registering the declarer ``gridka``; returns its log file."""
        where = tmp_path / "plugin"
        where.mkdir()
        (where / "merge_catalog_plugin.py").write_text(PLUGIN)
        info = where / "merge_catalog_plugin-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: merge-catalog-plugin\nVersion: 1.0\n"
        )
        (info / "entry_points.txt").write_text(
            "[tmbmerge.declarers]\ngridka = merge_catalog_plugin:make\n"
        )
        monkeypatch.syspath_prepend(str(where))
        monkeypatch.delitem(sys.modules, "merge_catalog_plugin", raising=False)
        log = tmp_path / "declared.jsonl"
        monkeypatch.setenv("MERGE_CATALOG_PLUGIN_LOG", str(log))
        return log

    # 1. declare ---------------------------------------------------------------------------------

    def test_merge_run_declares_every_output_with_metadata_and_lineage(
        self, cli, backend, tmb_run, tmp_path, read_event_list
    ):
        folder = tmb_run[0].parent
        catalog_import(cli, backend, folder)
        out = tmp_path / "out"
        result = merge_run(
            cli,
            backend,
            folder,
            out,
            "--declare",
            "--target-size",
            two_output_target(tmb_run),
            "--json",
        )
        assert result.code == 0, result.err
        report = result.json()
        assert len(report["outputs"]) == 2
        merged_from = []
        with open_catalog(backend.url) as catalog:
            for output in report["outputs"]:
                path = Path(output["output"])
                parents = input_names(output)
                merged_from += parents
                assert output["declared"] == "declared"
                record = catalog.get(path.name)
                assert record["file_size"] == path.stat().st_size
                assert record["checksum"] == [adler32_of(path)]
                assert record["event_count"] == len(read_event_list(path)) == 40 * len(parents)
                assert record["runs"] == [[RUN, 0, "physics"]]
                assert record["data_tier"] == "thumbnail"
                assert [p["file_name"] for p in record["parents"]] == parents
                assert catalog.parents(path.name) == parents
                for parent in parents:
                    assert catalog.children(parent) == [path.name]
        assert merged_from == [p.name for p in tmb_run]  # every input, in partition order

        first = report["outputs"][0]
        name = Path(first["output"]).name
        children = cli("catalog", "children", tmb_run[0].name, "--catalog", backend.url)
        assert (children.code, children.out) == (0, f"{name}\n")
        parents = cli("catalog", "parents", name, "--catalog", backend.url)
        assert (parents.code, parents.out.splitlines()) == (0, input_names(first))
        assert states(cli, out) == {Path(o["output"]).name: "declared" for o in report["outputs"]}

    # 2 and 3. declaring again ------------------------------------------------------------------

    def test_declaring_the_same_output_again_and_with_another_checksum(
        self, cli, backend, tmb_run, tmp_path, sha256_of
    ):
        folder = tmb_run[0].parent
        catalog_import(cli, backend, folder)
        result = merge_run(cli, backend, folder, tmp_path / "out", "--declare", "--json")
        assert result.code == 0, result.err
        output = Path(result.json()["outputs"][0]["output"])
        checksum, digest = adler32_of(output), sha256_of(output)

        again = cli("declare", output, "--catalog", backend.url)
        assert again.code == 0, again.err
        assert again.out.startswith(f"{output.name}: already declared")

        md = read_sidecar(output)
        write_sidecar(output, dict(md, checksum=["adler32:00010001"]))
        conflict = cli("declare", output, "--catalog", backend.url, "--json")
        assert conflict.code == 8
        [failed] = conflict.json()["failed"]
        assert failed["error"] == "DeclarationConflict"
        assert "different adler32" in failed["message"] and output.name in failed["text"]
        assert output.is_file() and sha256_of(output) == digest
        with open_catalog(backend.url) as catalog:
            assert catalog.get(output.name)["checksum"] == [checksum]

    def test_another_file_declared_under_the_output_name_is_a_conflict(
        self, cli, backend, tmb_run, tmp_path
    ):
        folder = tmb_run[0].parent
        catalog_import(cli, backend, folder)
        name = f"tmb_{RUN:010d}_mrg_p000-p005.tmb"
        with open_catalog(backend.url) as catalog:
            catalog.declare(
                {
                    "file_name": name,
                    "file_size": 12345,
                    "checksum": ["adler32:00010001"],
                    "data_tier": "thumbnail",
                    "runs": [[RUN, 0, "physics"]],
                }
            )
        out = tmp_path / "out"
        result = merge_run(cli, backend, folder, out, "--declare", "--json")
        assert result.code == 8
        report = result.json()
        [failure] = report["failures"]
        assert (failure["error"], failure["output"]) == ("DeclarationConflict", name)
        assert "different file_size" in failure["message"]
        output = out / name
        assert output.is_file() and sidecar_path(output).is_file()  # the verified output stays
        assert verify_file(output, metadata="auto").ok
        assert states(cli, out) == {name: "verified"}
        with open_catalog(backend.url) as catalog:
            assert catalog.get(name)["file_size"] == 12345  # the first record is kept

    # 4. unknown inputs and parents -------------------------------------------------------------

    def test_inputs_unknown_to_the_catalogue_are_refused(
        self, cli, backend, tmb_run, tmp_path, leftovers
    ):
        folder = tmb_run[0].parent
        open_catalog(
            backend.url
        ).close()  # a catalogue that exists (a missing one is another error)
        out = tmp_path / "out"
        result = merge_run(cli, backend, folder, out, "--declare")
        assert result.code == 8
        assert f"{tmb_run[0]}: input is not declared in the catalogue" in result.err
        assert tmb_files(out) == [] and leftovers(out) == []

        single = tmp_path / "single.tmb"
        result = cli("merge", *tmb_run, "-o", single, "--catalog", backend.url, "--declare")
        assert result.code == 8
        assert "not declared" in result.err and tmb_run[0].name in result.err
        assert not single.exists() and not sidecar_path(single).exists()

    def test_declaring_an_output_whose_parents_are_unknown(self, cli, backend, tmb_run, tmp_path):
        output = tmp_path / "merged.tmb"
        assert cli("merge", *tmb_run, "-o", output, "--quiet").code == 0  # no catalogue involved
        open_catalog(
            backend.url
        ).close()  # a catalogue that exists (a missing one is another error)
        result = cli("declare", output, "--catalog", backend.url, "--json")
        assert result.code == 8
        [failed] = result.json()["failed"]
        assert failed["error"] == "UnknownParent"
        assert f"parents not declared: {', '.join(p.name for p in tmb_run)}" in failed["message"]
        with open_catalog(backend.url) as catalog:
            assert not catalog.exists(output.name)

    # 5. merged twice ---------------------------------------------------------------------------

    def test_inputs_merged_once_are_refused_elsewhere_but_the_same_run_resumes(
        self, cli, backend, tmb_run, tmp_path, sha256_of, leftovers
    ):
        folder = tmb_run[0].parent
        catalog_import(cli, backend, folder)
        out = tmp_path / "out"
        first = merge_run(cli, backend, folder, out, "--declare", "--json")
        assert first.code == 0, first.err
        output = Path(first.json()["outputs"][0]["output"])
        digest = sha256_of(output)

        elsewhere = tmp_path / "elsewhere"
        result = merge_run(cli, backend, folder, elsewhere, "--declare")
        assert result.code == 8
        assert f"{tmb_run[0]}: already merged into {output.name}" in result.err
        assert tmb_files(elsewhere) == [] and leftovers(elsewhere) == []

        single = tmp_path / "again.tmb"
        result = cli("merge", tmb_run[2], tmb_run[3], "-o", single, "--catalog", backend.url)
        assert result.code == 8
        assert f"{tmb_run[2]}: already merged into {output.name}" in result.err
        assert not single.exists() and leftovers(tmp_path) == []

        same = merge_run(cli, backend, folder, out, "--declare", "--json")  # the same command again
        assert same.code == 0, same.err
        [again] = same.json()["outputs"]
        assert (again["output"], again["status"]) == (str(output), "already declared")
        assert sha256_of(output) == digest and tmb_files(out) == [output.name]
        with open_catalog(backend.url) as catalog:
            assert catalog.children(tmb_run[0].name) == [output.name]

    def test_skip_bad_leaves_already_merged_inputs_out(
        self, cli, backend, tmb_run, tmp_path, read_event_list
    ):
        folder = tmb_run[0].parent
        catalog_import(cli, backend, folder)
        earlier = tmp_path / "earlier.tmb"
        result = cli(
            "merge",
            tmb_run[0],
            tmb_run[1],
            "-o",
            earlier,
            "--catalog",
            backend.url,
            "--declare",
            "--quiet",
        )
        assert result.code == 0, result.err

        result = merge_run(
            cli, backend, folder, tmp_path / "out", "--declare", "--skip-bad", "--json"
        )
        assert result.code == 0, result.err
        report = result.json()
        [output] = report["outputs"]
        # refused at planning, so the output is named after the partitions it really holds
        assert [(Path(s["file"]).name, s["reason"]["error"]) for s in report["skipped"]] == [
            (tmb_run[0].name, "AlreadyMerged"),
            (tmb_run[1].name, "AlreadyMerged"),
        ]
        assert all(
            f"already merged into {earlier.name}" in s["reason"]["message"]
            for s in report["skipped"]
        )
        first, last = (
            p.stem.rsplit("_", 1)[1] for p in (tmb_run[2], tmb_run[-1])
        )  # "p002", "p005"
        assert Path(output["output"]).name == f"tmb_{RUN:010d}_mrg_{first}-{last}.tmb"
        rest = [p.name for p in tmb_run[2:]]
        assert input_names(output) == rest
        path = Path(output["output"])
        assert read_event_list(path) == [e for p in tmb_run[2:] for e in read_event_list(p)]
        with open_catalog(backend.url) as catalog:
            assert catalog.parents(path.name) == rest
            assert catalog.children(tmb_run[0].name) == [earlier.name]

    # 6. incomplete runs ------------------------------------------------------------------------

    def test_expect_complete_refuses_a_run_missing_a_catalogued_partition(
        self, cli, backend, tmb_run, tmb_file_factory, tmp_path
    ):
        folder = tmb_run[0].parent
        others = [
            tmb_file_factory(
                folder / file_name(OTHER_RUN, p),
                run=OTHER_RUN,
                partition=p,
                first_event=1 + 100 * p,
            ).path
            for p in range(3)
        ]
        catalog_import(cli, backend, folder)
        aside = tmp_path / "aside"
        aside.mkdir()
        missing = tmb_run[3]  # catalogued, but not among the inputs
        for item in (missing, sidecar_path(missing)):
            shutil.move(item, aside / item.name)

        out = tmp_path / "out"
        result = merge_run(cli, backend, folder, out, "--declare", "--expect-complete", "--json")
        assert result.code == 8
        report = result.json()
        [failure] = report["failures"]
        assert (failure["error"], failure["run"]) == ("IncompleteRun", RUN)
        assert "p003" in failure["message"] and missing.name in failure["message"]
        other_output = f"tmb_{OTHER_RUN:010d}_mrg_p000-p002.tmb"
        assert tmb_files(out) == [other_output]  # the complete run is merged...
        assert [o["declared"] for o in report["outputs"]] == ["declared"]
        assert states(cli, out) == {other_output: "declared"}
        assert catalogued_thumbnails(backend) == []  # ...and nothing of the incomplete one
        with open_catalog(backend.url) as catalog:
            assert catalog.parents(other_output) == [p.name for p in others]

        present = [p for p in tmb_run if p != missing]
        single = tmp_path / "single.tmb"
        result = cli("merge", *present, "-o", single, "--catalog", backend.url, "--expect-complete")
        assert result.code == 8
        assert "run 178000 is not complete" in result.err and "p003" in result.err
        assert not single.exists()
        for item in (missing, sidecar_path(missing)):  # with it back, the same merge is fine
            shutil.move(aside / item.name, item)
        result = cli(
            "merge",
            *tmb_run,
            "-o",
            single,
            "--catalog",
            backend.url,
            "--expect-complete",
            "--quiet",
        )
        assert result.code == 0, result.err

    # 7. a failed declaration -------------------------------------------------------------------

    def test_failed_declaration_keeps_the_output_then_declare_and_rerun_retire(
        self, cli, backend, tmb_run, tmp_path
    ):
        folder = tmb_run[0].parent
        catalog_import(cli, backend, folder)
        out, retired = tmp_path / "out", tmp_path / "retired"
        command = ("--declare", "--retire-inputs", "--retire-dir", retired, "--json")
        backend.refuse_declarations()
        result = merge_run(cli, backend, folder, out, *command)
        assert result.code == 8
        report = result.json()
        [output] = report["outputs"]
        [failure] = report["failures"]
        assert output["declared"] == "failed" and output["declare_error"]["exit_code"] == 8
        assert failure["exit_code"] == 8 and output["retired"] == []
        path = Path(output["output"])
        assert path.is_file() and sidecar_path(path).is_file()
        assert verify_file(path, metadata="auto").ok
        journal = status(cli, out)
        [entry] = journal["outputs"]
        assert entry["state"] == "verified" and entry["error"].startswith("declaration failed:")
        assert journal["retired"] == []
        assert_in_place(tmb_run)
        assert not retired.exists()
        assert catalogued_thumbnails(backend) == []

        backend.accept_declarations()
        declared = cli("declare", path, "--catalog", backend.url)
        assert declared.code == 0, declared.err
        assert declared.out.startswith(f"{path.name}: declared")

        rerun = merge_run(cli, backend, folder, out, *command)
        assert rerun.code == 0, rerun.err
        [output] = rerun.json()["outputs"]
        assert output["declared"] == "already declared"
        assert [Path(r["file"]).name for r in output["retired"]] == [p.name for p in tmb_run]
        journal = status(cli, out)
        assert [e["state"] for e in journal["outputs"]] == ["retired"]
        assert [r["input"] for r in journal["retired"]] == [str(p) for p in tmb_run]
        assert sorted(os.listdir(retired)) == sorted(
            [p.name for p in tmb_run] + [p.name + ".json" for p in tmb_run]
        )

    def test_failed_declaration_of_a_single_merge_keeps_the_output(
        self, cli, backend, tmb_run, tmp_path
    ):
        catalog_import(cli, backend, tmb_run[0].parent)
        output = tmp_path / "single.tmb"
        backend.refuse_declarations()
        result = cli(
            "merge", *tmb_run, "-o", output, "--catalog", backend.url, "--declare", "--quiet"
        )
        assert result.code == 8
        assert (
            "declaration failed, the verified output is kept (retry with tmbmerge declare)"
            in result.err
        )
        assert output.is_file() and verify_file(output, metadata="auto").ok
        backend.accept_declarations()
        assert cli("declare", output, "--catalog", backend.url).code == 0
        with open_catalog(backend.url) as catalog:
            assert catalog.parents(output.name) == [p.name for p in tmb_run]

    # 8. retiring inputs ------------------------------------------------------------------------

    @pytest.mark.parametrize("action", ["move", "delete"])
    def test_inputs_are_retired_after_their_output_is_declared(
        self, cli, backend, tmb_run, tmp_path, action, sha256_of
    ):
        folder = tmb_run[0].parent
        catalog_import(cli, backend, folder)
        digests = {p.name: sha256_of(p) for p in tmb_run}
        out, retired = tmp_path / "out", tmp_path / "retired"
        target = two_output_target(tmb_run)
        result = merge_run(
            cli,
            backend,
            folder,
            out,
            "--declare",
            f"--retire-inputs={action}",
            "--retire-dir",
            retired,
            "--target-size",
            target,
            "--json",
        )
        assert result.code == 0, result.err
        report = result.json()
        assert len(report["outputs"]) == 2
        owner = {}
        for output in report["outputs"]:
            assert output["declared"] == "declared"
            assert [Path(r["file"]).name for r in output["retired"]] == input_names(output)
            owner.update((name, Path(output["output"]).name) for name in input_names(output))
        for path in tmb_run:
            assert not path.exists() and not sidecar_path(path).exists()
        journal = status(cli, out)
        assert {e["state"] for e in journal["outputs"]} == {"retired"}
        assert [(r["input"], r["output"], r["action"]) for r in journal["retired"]] == [
            (str(p), owner[p.name], action) for p in tmb_run
        ]
        if action == "move":
            assert [r["destination"] for r in journal["retired"]] == [
                str(retired / p.name) for p in tmb_run
            ]
            for path in tmb_run:
                assert sha256_of(retired / path.name) == digests[path.name]
                assert read_sidecar(retired / path.name)["file_name"] == path.name
        else:
            assert [r["destination"] for r in journal["retired"]] == [None] * len(tmb_run)
            assert not retired.exists()

        again = merge_run(
            cli,
            backend,
            folder,
            out,
            "--declare",
            f"--retire-inputs={action}",
            "--retire-dir",
            retired,
            "--target-size",
            target,
            "--json",
        )  # a rerun plans alike
        assert again.code == 0, again.err
        assert [o["status"] for o in again.json()["outputs"]] == ["already retired"] * 2

    @pytest.mark.parametrize(
        "options",
        [
            ("--retire-inputs",),  # no --declare
            ("--retire-inputs", "--mode", "fast"),
            ("--retire-inputs", "--declare", "--mode", "fast"),
            ("--retire-inputs=delete", "--mode", "fast"),
        ],
    )
    def test_retiring_needs_a_verified_declared_output(
        self, cli, backend, tmb_run, tmp_path, options
    ):
        folder = tmb_run[0].parent
        catalog_import(cli, backend, folder)
        out = tmp_path / "out"
        result = merge_run(cli, backend, folder, out, *options)
        assert result.code == 2
        assert "tmbmerge: error:" in result.err and (
            "--retire-inputs" in result.err or "--declare" in result.err
        )
        assert not out.exists()
        assert_in_place(tmb_run)
        assert catalogued_thumbnails(backend) == []

    @pytest.mark.parametrize("clash", ["data", "sidecar"])
    def test_retirement_folder_already_holding_the_name(
        self, cli, backend, tmb_run, tmp_path, clash
    ):
        folder = tmb_run[0].parent
        catalog_import(cli, backend, folder)
        out, retired = tmp_path / "out", tmp_path / "retired"
        retired.mkdir()
        taken = retired / (tmb_run[0].name if clash == "data" else tmb_run[0].name + ".json")
        taken.write_bytes(b"an older file of the same name")
        result = merge_run(
            cli, backend, folder, out, "--declare", "--retire-inputs", "--retire-dir", retired
        )
        assert result.code == 7
        assert f"{taken}: retirement folder already holds a file of this name" in result.err
        assert taken.read_bytes() == b"an older file of the same name"
        assert_in_place(tmb_run)  # the input, data and sidecar, stays where it was
        assert sorted(os.listdir(retired)) == [taken.name]
        name = f"tmb_{RUN:010d}_mrg_p000-p005.tmb"
        [entry] = status(cli, out)["outputs"]
        assert (entry["name"], entry["state"]) == (name, "declared")
        assert entry["error"].startswith("retirement failed:")
        assert status(cli, out)["retired"] == []

        taken.unlink()  # the operator clears the name: the rerun retires
        result = merge_run(
            cli, backend, folder, out, "--declare", "--retire-inputs", "--retire-dir", retired
        )
        assert result.code == 0, result.err
        assert states(cli, out) == {name: "retired"}
        assert [r["input"] for r in status(cli, out)["retired"]] == [str(p) for p in tmb_run]
        assert all(not p.exists() and (retired / p.name).is_file() for p in tmb_run)

    def test_a_retirement_failure_does_not_stop_the_other_outputs(
        self, cli, backend, tmb_run, tmp_path
    ):
        folder = tmb_run[0].parent
        catalog_import(cli, backend, folder)
        out, retired = tmp_path / "out", tmp_path / "retired"
        retired.mkdir()
        (retired / tmb_run[0].name).write_bytes(b"an older file of the same name")
        result = merge_run(
            cli,
            backend,
            folder,
            out,
            "--declare",
            "--retire-inputs",
            "--retire-dir",
            retired,
            "--target-size",
            two_output_target(tmb_run),
            "--json",
        )
        assert result.code == 7
        report = result.json()
        [failure] = report["failures"]
        assert failure["error"] == "OutputExists"
        first, second = report["outputs"]
        assert failure["output"] == Path(first["output"]).name
        assert first["retired"] == []
        assert [Path(r["file"]).name for r in second["retired"]] == input_names(second)
        assert states(cli, out) == {
            Path(first["output"]).name: "declared",
            Path(second["output"]).name: "retired",
        }
        assert_in_place([folder / name for name in input_names(first)])

    # 9. a declarer plugin ----------------------------------------------------------------------

    def test_a_declarer_plugin_receives_the_merged_metadata(
        self, cli, backend, tmb_run, tmp_path, declarer_plugin
    ):
        folder = tmb_run[0].parent
        catalog_import(cli, backend, folder)
        result = merge_run(
            cli, backend, folder, tmp_path / "out", "--declare", "--declarer", "gridka", "--json"
        )
        assert result.code == 0, result.err
        [output] = result.json()["outputs"]
        path = Path(output["output"])
        [received] = [json.loads(line) for line in declarer_plugin.read_text().splitlines()]
        assert received["file_name"] == path.name
        assert received["file_size"] == path.stat().st_size
        assert received["checksum"] == [adler32_of(path)]
        assert received["event_count"] == 240 and received["data_tier"] == "thumbnail"
        assert received["parents"] == [{"file_name": p.name} for p in tmb_run]
        with open_catalog(backend.url) as catalog:
            assert catalog.get(path.name)["Site.name"] == "GridKa"

        unknown = merge_run(
            cli, backend, folder, tmp_path / "other", "--declare", "--declarer", "nope"
        )
        assert unknown.code == 2 and "unknown declarer 'nope'" in unknown.err
        assert tmb_files(tmp_path / "other") == []

    # 10. crosschecks from the catalogue ----------------------------------------------------------

    def test_inputs_are_crosschecked_against_the_catalogue_not_the_sidecar(
        self, cli, backend, tmb_run, tmp_path
    ):
        folder = tmb_run[0].parent
        victim = tmb_run[1]
        right = read_sidecar(victim)
        write_sidecar(victim, dict(right, checksum=["adler32:00010001"]))
        catalog_import(cli, backend, folder)  # the catalogue gets the wrong adler32
        write_sidecar(victim, right)  # the sidecar is right again

        output = tmp_path / "single.tmb"
        result = cli("merge", *tmb_run, "-o", output, "--catalog", backend.url)
        assert result.code == 6
        assert f"{victim}: adler32 differs from the catalogue (expected 00010001" in result.err
        assert not output.exists()
        out = tmp_path / "out"
        result = merge_run(cli, backend, folder, out)
        assert result.code == 6 and "differs from the catalogue" in result.err
        assert tmb_files(out) == []
        assert (
            cli("merge", *tmb_run, "-o", output, "--quiet").code == 0
        )  # the sidecars alone are fine

    def test_sidecars_are_not_needed_with_a_catalogue(self, cli, backend, tmb_run, tmp_path):
        folder = tmb_run[0].parent
        catalog_import(cli, backend, folder)
        for path in tmb_run:
            sidecar_path(path).unlink()
        result = merge_run(cli, backend, folder, tmp_path / "out", "--declare", "--json")
        assert result.code == 0, result.err
        [output] = result.json()["outputs"]
        assert output["declared"] == "declared" and input_names(output) == [p.name for p in tmb_run]
        path = Path(output["output"])
        assert verify_file(path, metadata="auto").ok
        assert read_sidecar(path)["parents"] == [{"file_name": p.name} for p in tmb_run]


class TestMergeWithSqlite(MergeCatalogTests):
    @pytest.fixture
    def backend(self, tmp_path):
        return SqliteBackend(tmp_path)


# -- retiring, without a catalogue ----------------------------------------------------------------


def test_an_interrupted_retirement_finishes_a_half_moved_input(tmb_run, tmp_path):
    """A kill between moving a data file and its sidecar: the next attempt moves the sidecar
    and records the input, instead of skipping it because its data file is gone."""
    from engine.merge.retire import retire_inputs

    retired = tmp_path / "retired"
    retired.mkdir()
    half = tmb_run[0]
    shutil.move(half, retired / half.name)  # the data went, the sidecar did not
    recorded = []
    done = retire_inputs(
        tmb_run[:2],
        action="move",
        retire_dir=retired,
        record=lambda path, action, destination: recorded.append((path, action, destination)),
    )
    assert recorded == [(str(p), "move", str(retired / p.name)) for p in tmb_run[:2]]
    assert [d["file"] for d in done] == [str(p) for p in tmb_run[:2]]
    for path in tmb_run[:2]:
        assert not path.exists() and not sidecar_path(path).exists()
        assert (retired / path.name).is_file() and sidecar_path(retired / path.name).is_file()
