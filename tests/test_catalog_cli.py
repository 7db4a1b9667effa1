"""``tmbmerge catalog ...`` and ``tmbmerge declare``, and the declaration hook under them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from catalog_contract import raw, unmerged

import bindings.cli
from bindings.catalog import ALREADY_DECLARED, DECLARED, open_catalog
from bindings.catalog.hook import declare_file
from bindings.commands import COMMAND_MODULES
from engine.catalog import load_declarer, load_registration
from engine.errors import MetadataError, UnknownParent, UsageError
from engine.metadata import write_sidecar


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """``run_cli(*args) -> (exit code, stdout, stderr)`` through ``bindings.cli.main``.

    Only the catalogue commands are registered, so these tests do not depend on the other
    command modules, written concurrently.
    """
    monkeypatch.setattr(bindings.cli, "COMMAND_MODULES", ["bindings.commands.catalog"])
    monkeypatch.delenv("TMBMERGE_CATALOG", raising=False)

    def run(*args):
        capsys.readouterr()
        try:
            code = bindings.cli.main([str(arg) for arg in args])
        except SystemExit as exc:  # argparse refusing the command line
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def url(tmp_path) -> str:
    """An existing, empty catalogue: commands other than ``catalog import`` refuse a missing one."""
    url = f"sqlite://{tmp_path}/catalog.db"
    open_catalog(url).close()
    return url


def put_file(directory: Path, md: dict, *, size: int | None = None, data: bool = True) -> Path:
    """A data file of ``md["file_size"]`` bytes (or ``size``) and its sidecar, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / md["file_name"]
    if data:
        path.write_bytes(b"\0" * (md["file_size"] if size is None else size))
    write_sidecar(path, md)
    return path


def small(md: dict, size: int = 64) -> dict:
    return dict(md, file_size=size)


def test_catalog_module_is_registered():
    assert "bindings.commands.catalog" in COMMAND_MODULES


# --- tmbmerge declare -----------------------------------------------------------------------


def test_declare_then_declare_again(run_cli, url, tmp_path):
    with open_catalog(url) as catalog:
        catalog.declare(raw())
    output = put_file(tmp_path / "out", small(unmerged()))
    code, out, err = run_cli("declare", output, "--catalog", url)
    assert (code, out, err) == (0, f"{output.name}: declared (file id 2)\n", "")
    code, out, err = run_cli("declare", output, "--catalog", url)
    assert (code, out, err) == (0, f"{output.name}: already declared (file id 2)\n", "")


def test_declare_reads_the_catalogue_from_the_environment(run_cli, url, tmp_path, monkeypatch):
    output = put_file(tmp_path, small(raw()))
    monkeypatch.setenv("TMBMERGE_CATALOG", url)
    assert run_cli("declare", output)[0] == 0
    with open_catalog(url) as catalog:
        assert catalog.exists(output.name)


def test_no_catalogue_is_a_usage_error(run_cli, tmp_path):
    output = put_file(tmp_path, small(raw()))
    code, out, err = run_cli("declare", output)
    assert code == 2
    assert err == "tmbmerge: error: no catalogue: give --catalog URL or set TMBMERGE_CATALOG\n"


def test_unknown_parent_fails_loudly_in_one_line(run_cli, url, tmp_path):
    output = put_file(tmp_path, small(unmerged()))
    code, out, err = run_cli("declare", output, "--catalog", url)
    assert code == 8
    assert out == ""
    assert err == (
        f"tmbmerge: error: {output.name}: parents not declared: raw_0000178000_p003.raw "
        "(declare them first, or use --declare-parents)\n"
    )


def test_declare_parents_from_their_sidecars_or_as_placeholders(run_cli, url, tmp_path):
    put_file(tmp_path, small(raw(), 100), data=False)  # raw file's sidecar only, no data beside it
    first = put_file(tmp_path, small(unmerged(3)))
    second = put_file(tmp_path, small(unmerged(4)))  # its raw parent has no sidecar
    code, out, err = run_cli("declare", first, second, "--catalog", url, "--declare-parents")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{first.name}: declared (file id 2)",
        f"{second.name}: declared (file id 4)",
    ]
    with open_catalog(url) as catalog:
        assert catalog.get(raw()["file_name"])["file_size"] == 100
        placeholder = catalog.get(raw(4)["file_name"])
        assert "file_size" not in placeholder and "Catalog.placeholder" in placeholder
        assert catalog.children(raw(4)["file_name"]) == [second.name]


@pytest.mark.parametrize(
    "damage, code, words",
    [
        ("size", 6, "file size differs from its sidecar's file_size (expected 64, found 65)"),
        ("name", 6, "the sidecar describes another file"),
        ("no sidecar", 3, ".json: no sidecar (metadata) for this file"),
        ("no data", 3, ": no such file"),
        ("bad json", 4, ".json: sidecar is not valid JSON"),
        ("bad field", 4, ".json: event_count: must be an integer"),
    ],
)
def test_declare_checks_the_file_against_its_sidecar(run_cli, url, tmp_path, damage, code, words):
    output = put_file(tmp_path, small(raw()))
    sidecar = output.with_name(output.name + ".json")
    if damage == "size":
        output.write_bytes(b"\0" * 65)
    elif damage == "name":
        write_sidecar(output, small(raw(4)))
    elif damage == "no sidecar":
        sidecar.unlink()
    elif damage == "no data":
        output.unlink()
    elif damage == "bad json":
        sidecar.write_text("{")
    elif damage == "bad field":
        write_sidecar(output, dict(small(raw()), event_count="3000"))
    result = run_cli("declare", output, "--catalog", url)
    assert result[0] == code
    assert words in result[2]
    assert len(result[2].splitlines()) == 1 and "Traceback" not in result[2]
    with open_catalog(url) as catalog:
        assert catalog.files() == []


def test_declare_goes_on_after_a_failure_and_exits_with_the_first_code(run_cli, url, tmp_path):
    good = put_file(tmp_path, small(raw(1)))
    orphan = put_file(tmp_path, small(unmerged(5)))
    missing = tmp_path / "missing.tmb"
    code, out, err = run_cli("declare", orphan, good, missing, "--catalog", url, "--json")
    assert code == 8
    report = json.loads(out)
    assert report["declared"] == [{"file_name": good.name, "status": DECLARED, "file_id": 1}]
    assert [(f["file"], f["error"], f["exit_code"]) for f in report["failed"]] == [
        (str(orphan), "UnknownParent", 8),
        (str(missing), "InputNotFound", 3),
    ]
    assert len(err.splitlines()) == 2
    # the catalogue work the command spent, as merge and merge-run report it
    assert set(report["catalog"]) == {"requests", "seconds_waiting", "deadline"}
    assert report["catalog"]["requests"] >= 2 and report["catalog"]["seconds_waiting"] >= 0


# --- the hook itself ------------------------------------------------------------------------


def test_hook_reports_parents_it_declared(url, tmp_path):
    put_file(tmp_path, small(raw(), 10))
    output = put_file(tmp_path, small(unmerged()))
    seen = []
    with open_catalog(url) as catalog:
        result = declare_file(output, catalog, declare_parents=True, on_parent=seen.append)
        assert result.status == DECLARED
        assert seen == [(raw()["file_name"], DECLARED, 1)]
        # nothing left to declare the second time
        seen.clear()
        assert (
            declare_file(output, catalog, declare_parents=True, on_parent=seen.append).status
            == ALREADY_DECLARED
        )
        assert seen == []


def test_hook_finds_parent_sidecars_in_a_given_directory(url, tmp_path):
    put_file(tmp_path / "raw", small(raw(), 10), data=False)
    output = put_file(tmp_path / "tmb", small(unmerged()))
    with open_catalog(url) as catalog:
        declare_file(output, catalog, declare_parents=True, parents_dir=tmp_path / "raw")
        assert catalog.get(raw()["file_name"])["file_size"] == 10


def test_hook_refuses_a_lineage_loop(url, tmp_path):
    put_file(tmp_path, {"file_name": "a.tmb", "file_size": 1, "parents": [{"file_name": "b.tmb"}]})
    put_file(tmp_path, {"file_name": "b.tmb", "file_size": 1, "parents": [{"file_name": "a.tmb"}]})
    with open_catalog(url) as catalog:
        with pytest.raises(MetadataError, match=r"lineage loop \(a.tmb -> b.tmb -> a.tmb\)"):
            declare_file(tmp_path / "a.tmb", catalog, declare_parents=True)
        assert catalog.files() == []


def test_hook_without_declare_parents_names_the_missing(url, tmp_path):
    output = put_file(
        tmp_path, small(unmerged(parents=[{"file_name": "r1.raw"}, {"file_name": "r2.raw"}]))
    )
    with open_catalog(url) as catalog:
        with pytest.raises(UnknownParent, match="parents not declared: r1.raw, r2.raw"):
            declare_file(output, catalog)


SITE_PLUGIN = """
class SiteDeclarer:
    def __init__(self, catalog):
        self.catalog = catalog

    def declare(self, metadata):
        return self.catalog.declare(dict(metadata, **{"Site.name": "GridKa"}))


def make(catalog):
    return SiteDeclarer(catalog)


def broken(catalog):
    return object()


NOT_CALLABLE = 42
"""


@pytest.fixture
def site_plugin(tmp_path, monkeypatch):
    """A distribution on sys.path registering declarers ``site`` and ``broken``."""
    where = tmp_path / "plugin"
    where.mkdir()
    (where / "site_declarer.py").write_text(SITE_PLUGIN)
    info = where / "tmbmerge_site-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tmbmerge-site\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[tmbmerge.declarers]\nsite = site_declarer:make\nbroken = site_declarer:broken\n"
        "number = site_declarer:NOT_CALLABLE\n"
        "[tmbmerge.registrations]\nodd = site_declarer:broken\n"
        "number = site_declarer:NOT_CALLABLE\n"
    )
    monkeypatch.syspath_prepend(str(where))
    monkeypatch.delitem(sys.modules, "site_declarer", raising=False)


def test_declarer_plugin_from_an_entry_point(run_cli, url, tmp_path, site_plugin):
    put_file(tmp_path, small(raw(), 10))
    output = put_file(tmp_path, small(unmerged()))
    code, out, err = run_cli(
        "declare", output, "--catalog", url, "--declare-parents", "--declarer", "site"
    )
    assert (code, err) == (0, "")
    with open_catalog(url) as catalog:
        assert catalog.get(output.name)["Site.name"] == "GridKa"
        assert catalog.get(raw()["file_name"])["Site.name"] == "GridKa"  # parents go through it too


def test_unusable_declarers(url, site_plugin):
    with open_catalog(url) as catalog:
        assert load_declarer(None, catalog) is catalog
        with pytest.raises(
            UsageError, match=r"unknown declarer 'nope' \(known: catalog, broken, number, site\)"
        ):
            load_declarer("nope", catalog)
        with pytest.raises(UsageError, match="has no declare"):
            load_declarer("broken", catalog)
        with pytest.raises(UsageError, match="site_declarer:NOT_CALLABLE, which is not callable"):
            load_declarer("number", catalog)
    with pytest.raises(UsageError, match=r"'odd' \(site_declarer:broken\) made .*no register"):
        load_registration("odd:somewhere")
    with pytest.raises(UsageError, match="site_declarer:NOT_CALLABLE, which is not callable"):
        load_registration("number:somewhere")


# --- tmbmerge catalog import ----------------------------------------------------------------


def lineage_folder(folder: Path) -> list[str]:
    """Sidecars of 2 raw files, their unmerged children and a merged grandchild whose name
    sorts first, so that alphabetical order is not parents-first order."""
    put_file(folder, small(raw(1), 10), data=False)
    put_file(folder, small(raw(2), 10), data=False)
    put_file(folder, small(unmerged(1)))
    put_file(folder, small(unmerged(2)))
    merged = {
        "file_name": "a_merged_001-002.tmb",
        "file_size": 128,
        "checksum": ["adler32:00010001"],
        "runs": [[178000, 0, "physics"]],
        "data_tier": "thumbnail",
        "parents": [
            {"file_name": unmerged(2)["file_name"]},
            {"file_name": unmerged(1)["file_name"]},
        ],
    }
    put_file(folder, merged)
    return [
        raw(1)["file_name"],
        raw(2)["file_name"],
        unmerged(1)["file_name"],
        unmerged(2)["file_name"],
        "a_merged_001-002.tmb",
    ]


def test_import_declares_parents_first(run_cli, url, tmp_path):
    names = lineage_folder(tmp_path / "in")
    code, out, err = run_cli("catalog", "import", tmp_path / "in", "--catalog", url)
    assert (code, out, err) == (0, "declared 5, already declared 0, failed 0\n", "")
    with open_catalog(url) as catalog:
        assert sorted(catalog.files()) == sorted(names)
        assert catalog.parents("a_merged_001-002.tmb") == [
            unmerged(2)["file_name"],
            unmerged(1)["file_name"],
        ]
    code, out, err = run_cli("catalog", "import", tmp_path / "in", "--catalog", url)
    assert (code, out) == (0, "declared 0, already declared 5, failed 0\n")


def test_import_reports_failures_and_goes_on(run_cli, url, tmp_path):
    lineage_folder(tmp_path / "in")
    (tmp_path / "in" / "notes.json").write_text('{"comment": "not a sidecar"}')
    put_file(tmp_path / "in", small(unmerged(7)))  # its raw parent is nowhere
    code, out, err = run_cli("catalog", "import", tmp_path / "in", "--catalog", url, "--json")
    report = json.loads(out)
    assert code == 4  # the first failure: notes.json is not metadata
    assert len(report["declared"]) == 5 and report["already_declared"] == []
    assert [(f["file"], f["error"]) for f in report["failed"]] == [
        ("notes.json", "MetadataError"),
        (unmerged(7)["file_name"], "UnknownParent"),
    ]
    assert len(err.splitlines()) == 2 and "notes.json: comment: not a SAM metadata field" in err
    assert report["catalog"]["requests"] >= 6  # a transaction per declaration at least
    assert report["catalog"]["deadline"] > 0


def test_import_with_declare_parents_makes_placeholders(run_cli, url, tmp_path):
    put_file(tmp_path / "in", small(unmerged(1)))
    put_file(tmp_path / "in", small(unmerged(2)))
    code, out, err = run_cli(
        "catalog", "import", tmp_path / "in", "--catalog", url, "--declare-parents"
    )
    assert code == 0
    assert (
        out == "declared 2, already declared 0, failed 0; 2 parents without sidecars in "
        f"{tmp_path / 'in'} declared first\n"
    )


def test_import_of_a_generated_run(run_cli, url, tmb_run):
    """The sidecars the generator writes import as they are (their raw parents as placeholders)."""
    folder = tmb_run[0].parent
    code, out, err = run_cli(
        "catalog", "import", folder, "--catalog", url, "--declare-parents", "--json"
    )
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert sorted(report["declared"]) == sorted(path.name for path in tmb_run)
    assert len(report["parents_declared"]) == len(tmb_run)
    code, out, _ = run_cli(
        "catalog", "run", 178000, "--data-tier", "unmerged-thumbnail", "--catalog", url
    )
    assert out.split() == sorted(path.name for path in tmb_run)


@pytest.mark.parametrize("make, code", [(lambda d: d.mkdir(), 2), (lambda d: None, 3)])
def test_import_needs_a_folder_of_sidecars(run_cli, url, tmp_path, make, code):
    make(tmp_path / "in")
    assert run_cli("catalog", "import", tmp_path / "in", "--catalog", url)[0] == code


# --- look-ups -------------------------------------------------------------------------------


@pytest.fixture
def filled(run_cli, url, tmp_path) -> str:
    lineage_folder(tmp_path / "in")
    assert run_cli("catalog", "import", tmp_path / "in", "--catalog", url)[0] == 0
    return url


def test_show(run_cli, filled):
    name = unmerged(1)["file_name"]
    code, out, err = run_cli("catalog", "show", name, "--catalog", filled, "--json")
    record = json.loads(out)
    assert code == 0 and record["file_name"] == name and record["checksum"] == ["adler32:0a1b0001"]
    code, out, err = run_cli("catalog", "show", name, "--catalog", filled)
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["file_name"] == name
    assert lines["runs"] == '[[178000, 0, "physics"]]'
    assert lines["event_count"] == "3000"


def test_show_of_an_unknown_file(run_cli, filled):
    assert run_cli("catalog", "show", "nope.tmb", "--catalog", filled) == (
        8,
        "",
        "tmbmerge: error: nope.tmb: not declared in the catalogue\n",
    )


def test_run_listing(run_cli, filled):
    code, out, _ = run_cli("catalog", "run", 178000, "--catalog", filled, "--json")
    assert code == 0 and len(json.loads(out)) == 5
    code, out, _ = run_cli(
        "catalog", "run", 178000, "--data-tier", "unmerged-thumbnail", "--catalog", filled
    )
    assert out == f"{unmerged(1)['file_name']}\n{unmerged(2)['file_name']}\n"
    assert run_cli("catalog", "run", 1, "--catalog", filled)[:2] == (0, "")


def test_lineage_listings(run_cli, filled):
    code, out, _ = run_cli("catalog", "parents", "a_merged_001-002.tmb", "--catalog", filled)
    assert out == f"{unmerged(2)['file_name']}\n{unmerged(1)['file_name']}\n"
    code, out, _ = run_cli(
        "catalog", "children", unmerged(1)["file_name"], "--catalog", filled, "--json"
    )
    assert json.loads(out) == ["a_merged_001-002.tmb"]
    assert run_cli("catalog", "children", "nope", "--catalog", filled)[0] == 8


@pytest.mark.parametrize(
    "args",
    [("catalog",), ("catalog", "run", "one-hundred"), ("catalog", "frobnicate"), ("declare",)],
)
def test_bad_command_lines_exit_2(run_cli, args):
    assert run_cli(*args)[0] == 2


def test_bad_catalogue_url_exits_2(run_cli):
    code, out, err = run_cli("catalog", "show", "x", "--catalog", "gopher://x")
    assert code == 2 and "unknown catalogue scheme 'gopher'" in err


def test_show_prints_the_samweb_get_metadata_shape(cli, tmp_path):
    from catalog_contract import raw, unmerged

    url = f"sqlite://{tmp_path}/c.db"
    from bindings.catalog import open_catalog

    with open_catalog(url) as catalog:
        catalog.declare(raw())
        catalog.declare(unmerged(**{"Reco.pass": 2}))
    result = cli("catalog", "show", "tmb_0000178000_p003.tmb", "--samweb", "--catalog", url)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "     File Name: tmb_0000178000_p003.tmb"
    assert lines[1].startswith("       File Id: ")
    assert "     File Size: 51234570" in lines
    assert "      Checksum: adler32:0a1b0003" in lines
    assert "   Application: reco d0reco p17.09.03" in lines
    assert "          Runs: 178000.0000 (physics)" in lines
    assert "       Parents: raw_0000178000_p003.raw" in lines
    assert lines[-1] == "Reco.pass: 2"
    labels = [line.split(":")[0].strip() for line in lines[:-1]]
    assert (
        labels.index("File Size")
        < labels.index("Checksum")
        < labels.index("Data Tier")
        < labels.index("Runs")
    )
