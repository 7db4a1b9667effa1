"""The engine owns its interfaces: it never names ``bindings``, finds every backend through one
entry-point registry (``engine.plugins``), and declares a merged output from the record it wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from bindings.catalog import open_catalog
from engine import plugins
from engine.catalog import load_registration
from engine.errors import UsageError
from engine.merge import MergeSpec, merge_files

ENGINE = Path(__file__).resolve().parent.parent / "engine"


def test_the_engine_never_names_bindings():
    """Not an import, not a comment: the library stands without its faces."""
    named = [
        f"{path.relative_to(ENGINE.parent)}:{number}"
        for path in sorted(ENGINE.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "bindings" in line
    ]
    assert named == []


def test_replica_registrations_are_found_through_the_registry():
    assert plugins.names(plugins.REGISTRATIONS) == ["rucio"]
    registration = load_registration("rucio:FNAL_DCACHE?scope=tmb&dataset=merged_178000")
    assert type(registration).__name__ == "RucioRegistration"
    assert registration.rse == "FNAL_DCACHE"
    with pytest.raises(UsageError, match=r"unknown replica registration 'ftp' \(known: rucio\)"):
        load_registration("ftp:somewhere")


def test_a_merge_declares_the_record_it_wrote_without_reading_it_back(
    tmb_run, tmp_path, monkeypatch
):
    """Declaration crosses into the catalogue once: the sidecar just written is not re-read."""
    import engine.verify.checks
    from bindings.catalog.hook import declare_file

    url = f"sqlite://{tmp_path}/catalog.db"
    inputs = tmb_run[:2]
    with open_catalog(url) as catalog:
        for path in inputs:
            declare_file(path, catalog, declare_parents=True)

    def no_rereading(*args, **kwargs):
        raise AssertionError("the merged output's sidecar was read back to declare it")

    monkeypatch.setattr(engine.verify.checks, "checked_sidecar", no_rereading)
    monkeypatch.setattr(engine.verify.checks, "read_sidecar", no_rereading)
    report = merge_files(
        inputs,
        tmp_path / "merged.tmb",
        MergeSpec(mode="safe", catalog=url, declare=True),
    )
    assert (report.declared, report.declare_error) == ("declared", None)
    with open_catalog(url) as catalog:
        record = catalog.get("merged.tmb")
    assert (record["file_size"], record["checksum"]) == (report.file_size, [report.checksum])
    assert catalog_parents(url, "merged.tmb") == [p.name for p in inputs]


def catalog_parents(url: str, name: str) -> list[str]:
    with open_catalog(url) as catalog:
        return catalog.parents(name)


# -- library errors name API parameters; the command line adds its flags --------------------------


def test_a_spec_error_names_the_parameter_and_the_command_line_its_flag():
    from bindings.cli import error_line
    from engine.errors import ParameterError

    with pytest.raises(ParameterError) as caught:
        MergeSpec(threads=0)
    assert str(caught.value) == "threads must be at least 1"
    assert caught.value.parameters == ("threads",) and caught.value.exit_code == 2
    assert error_line(caught.value) == "threads must be at least 1 (option --jobs)"
    with pytest.raises(ParameterError) as caught:
        MergeSpec(mode="fast", catalog="sqlite:c.db", declare=True)
    assert "--" not in str(caught.value)
    assert error_line(caught.value).endswith("(options --declare, --mode)")


def test_the_command_line_says_which_flag(cli, tmb_run, tmp_path):
    result = cli("merge-run", tmb_run[0].parent, "--out-dir", tmp_path / "out", "--retire-inputs")
    assert result.code == 2
    assert result.err.startswith("tmbmerge: error: retire needs verified, declared outputs")
    assert result.err.rstrip().endswith("(options --retire-inputs, --catalog, --declare, --mode)")


# -- error classes say what differs ----------------------------------------------------------------


def test_an_event_that_differs_is_not_a_count_that_differs(tmb_run):
    from engine.errors import EventCountMismatch, EventMismatch
    from engine.readers import open_file
    from engine.verify.crosscheck import crosscheck_events

    with open_file(tmb_run[0]) as first, open_file(tmb_run[1]) as second:
        one, other = first.events, second.events
    assert len(one) == len(other)
    with pytest.raises(EventMismatch, match="event 0 differs from the inputs'"):
        crosscheck_events("out.tmb", other, one)
    with pytest.raises(EventCountMismatch, match="exactly the inputs' events"):
        crosscheck_events("out.tmb", one, [one, other])


def test_merge_files_names_its_stages_and_fits_on_a_screen():
    """The flow is in the code: the four stage types, in order, in one short function."""
    import inspect

    from engine.merge import pipeline

    source = inspect.getsource(pipeline.merge_files)
    assert len(source.splitlines()) <= 60
    stages = ["OutputTransaction(", "prepare_inputs(", ".verify(", ".publish(", "AfterVerified("]
    positions = [source.index(stage) for stage in stages]
    assert positions == sorted(positions)
