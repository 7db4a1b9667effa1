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


def test_library_advice_names_parameters_and_the_command_line_words_them_as_flags(
    cli, tmb_run, tmp_path
):
    from bindings.flags import cli_wording
    from engine.errors import OutputExists

    out = tmp_path / "merged.tmb"
    out.write_bytes(b"taken")
    with pytest.raises(OutputExists) as caught:
        merge_files(tmb_run[:2], out, MergeSpec(mode="fast"))
    assert "use force=True" in str(caught.value) and "--" not in caught.value.message
    result = cli("merge", *tmb_run[:2], "-o", out, "--mode", "fast")
    assert result.code == 7 and "(use --force to replace it)" in result.err
    assert cli_wording(
        'planned with run=178000 (now run=None), metadata="none"; or add replan=True; '
        "/data/run=5/f.tmb: use allow_mixed_runs=True"
    ) == (
        "planned with --run 178000 (now no --run), --metadata none; or add --replan; "
        "/data/run=5/f.tmb: use --allow-mixed-runs"
    )


LOG_CALLS = ("debug", "info", "warning", "error", "exception")


def test_the_engine_speaks_no_command_line_flags_in_its_messages():
    """What the engine raises or logs names API parameters (``force=True``); docstrings and
    comments may say how the command line spells them."""
    import ast
    import re

    flag = re.compile(r"(?<![\w-])--[a-z]")
    root = Path(__file__).resolve().parent.parent / "engine"
    found = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            logged = isinstance(node, ast.Call) and getattr(node.func, "attr", "") in LOG_CALLS
            if isinstance(node, ast.Raise) or logged:
                for sub in ast.walk(node):
                    if (
                        isinstance(sub, ast.Constant)
                        and isinstance(sub.value, str)
                        and id(sub) not in docstrings
                        and flag.search(sub.value)
                    ):
                        found.append(f"{path.relative_to(root)}:{sub.lineno}: {sub.value}")
    assert found == []


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


def test_merge_run_names_its_stages_and_fits_on_a_screen():
    """A merge-run's flow is in the code too: journal, plan, each output through merge_files'
    stages in a worker, AfterVerified here, the summary; merge_run and its body one screen each."""
    import inspect

    from engine.merge import run

    for function in (run.merge_run, run._merge_run):
        assert len(inspect.getsource(function).splitlines()) <= 60, function.__name__
    source = inspect.getsource(run._merge_run)
    stages = [
        "_check_plan_settings(",
        "_reconcile(",
        "_plan(",
        "AfterVerified(",
        ".stand(",
        "_record_tasks(",
        "run_merge_task",
        ".take(",
        "report.seconds",
    ]
    positions = [source.index(stage) for stage in stages]
    assert positions == sorted(positions)
    assert "merge_files(" in inspect.getsource(run.run_merge_task)
