"""Issue 10: a sqlite catalogue this user may not write (a read-only file, a read-only folder)
is read, never refused as a bug: ``catalog show``, ``catalog run`` and a merge that only checks
its inputs against it work; a declaration is refused with exit 8, naming the file.

The tests run as root in CI, and root may write anything: each command runs in a forked child
that has given up root for ``nobody`` (uid and gid 65534, no groups).  It is forked from the
test process rather than started anew because a new interpreter could not even start as
``nobody`` here (the interpreter lives under /root); the child runs the very ``main()`` of the
command line, whose modules the parent imported first (and whose installed package metadata the
child reads before giving up root).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest

NOBODY = 65534


def _read_the_installation_first() -> None:
    """The package metadata (entry points: which class serves ``sqlite:``) lies under /root
    here, where ``nobody`` may not look; a user's own installation is readable to them, so the
    child reads it while still root and keeps what it found."""
    from engine import plugins

    known = {group: plugins.targets(group) for group in (plugins.CATALOGS, plugins.DECLARERS)}
    plugins.targets = lambda group: known.get(group, {})  # type: ignore[assignment]


def run_as_nobody(*argv) -> tuple[int, str, str]:
    """``tmbmerge ARGV`` in a forked child with no root rights: (exit code, stdout, stderr)."""
    import io

    from bindings.cli import main

    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            if os.geteuid() == 0:
                _read_the_installation_first()
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
            sys.stdout = io.TextIOWrapper(os.fdopen(out.fileno(), "wb", closefd=False))
            sys.stderr = io.TextIOWrapper(os.fdopen(err.fileno(), "wb", closefd=False))
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, whatever it is
            sys.stderr.write(f"child failed: {type(exc).__name__}: {exc}\n")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    texts = []
    for f in (out, err):
        f.seek(0)
        texts.append(f.read().decode("utf-8", "replace"))
        f.close()
    return os.waitstatus_to_exitcode(status), texts[0], texts[1]


@pytest.fixture
def shared(tmb_run, cli):
    """A folder every user may enter (pytest's own are root's only): a run of unmerged files,
    their catalogue and an output folder nobody may write into.  The merge done here as the
    test's user also imports every module the forked children will use."""
    folder = Path(tempfile.mkdtemp(prefix="tmbmerge-readonly-"))
    os.chmod(folder, 0o755)
    run = folder / "run"
    shutil.copytree(tmb_run[0].parent, run)
    catalog = folder / "catalog" / "cat.db"
    catalog.parent.mkdir()
    url = f"sqlite://{catalog}"
    assert cli("catalog", "import", run, "--catalog", url, "--declare-parents").code == 0
    warm = cli("merge", *sorted(run.glob("*.tmb"))[:2], "-o", folder / "warm.tmb", "--catalog", url)
    assert warm.code == 0, warm.err
    (folder / "warm.tmb").unlink()
    (folder / "warm.tmb.json").unlink()
    out = folder / "out"
    out.mkdir()
    os.chmod(out, 0o777)
    for path in [folder, *folder.rglob("*")]:
        os.chmod(
            path, os.stat(path).st_mode | stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0)
        )
    yield folder, url, catalog
    for path in folder.rglob("*"):
        if path.is_dir():
            os.chmod(path, 0o755)
    shutil.rmtree(folder, ignore_errors=True)


def name_of_an_input(folder: Path) -> str:
    return sorted((folder / "run").glob("*.tmb"))[0].name


@pytest.mark.parametrize("read_only", ["file", "folder"])
def test_a_catalogue_this_user_cannot_write_is_read(shared, read_only):
    folder, url, catalog = shared
    if read_only == "file":  # the file is root's and read-only; its folder is open to all
        catalog.chmod(0o444)
        os.chmod(catalog.parent, 0o777)
    else:  # a folder of root's that nobody else may write, the file writable by all
        catalog.chmod(0o666)
        os.chmod(catalog.parent, 0o755)
    shown = run_as_nobody("catalog", "show", name_of_an_input(folder), "--catalog", url)
    assert shown[0] == 0, shown
    assert name_of_an_input(folder) in shown[1]
    run = run_as_nobody("catalog", "run", "178000", "--catalog", url)
    assert run[0] == 0 and name_of_an_input(folder) in run[1], run
    inputs = sorted((folder / "run").glob("*.tmb"))[:2]
    merged = run_as_nobody("merge", *inputs, "-o", folder / "out" / "m.tmb", "--catalog", url)
    assert merged[0] == 0, merged  # the inputs crosschecked against the catalogue
    assert (folder / "out" / "m.tmb").exists()


@pytest.mark.parametrize("read_only", ["file", "folder"])
def test_declaring_into_a_read_only_catalogue_is_exit_8_naming_it(shared, read_only):
    folder, url, catalog = shared
    if read_only == "file":
        catalog.chmod(0o444)
        os.chmod(catalog.parent, 0o777)
    else:
        os.chmod(catalog.parent, 0o755)
    before = catalog.read_bytes()
    inputs = sorted((folder / "run").glob("*.tmb"))[:2]
    code, out, err = run_as_nobody(
        "merge", *inputs, "-o", folder / "out" / "m.tmb", "--catalog", url, "--declare"
    )
    assert code == 8, (code, out, err)
    [line] = err.strip().splitlines()
    assert f"{catalog}: cannot declare m.tmb: the catalogue is read-only for this user" in line
    assert "internal error" not in err
    assert catalog.read_bytes() == before
    assert all(wal.stat().st_size == 0 for wal in catalog.parent.glob("*-wal"))
