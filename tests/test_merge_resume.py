"""Resumability: a ``merge-run`` killed halfway finishes on rerun, redoing only what was unfinished.

The headline test runs ``tmbmerge merge-run DIR --out-dir OUT --target-size X --jobs J`` as a
real process on a ~25 MB run planned into 6 outputs, SIGKILLs it as soon as the first output is
published (and checks that not all were), waits until no process of it is left (worker
processes must die with their parent, not keep writing), and reruns the same command.  The
rerun must end with exactly the planned outputs, each verified against its sidecar and holding
its inputs' events; the outputs that were finished before the kill must not be redone (same
inode and mtime, status "already verified"); no temporary, staged-sidecar or lock file may be
left; and ``tmbmerge status`` must list every output as verified.

Publishing an output is two renames (data file and sidecar).  The last tests put a SIGKILL, a
failing fsync and a signal exactly between them: a rerun must still resume, and a data file
must never be left without its sidecar (nor, for a signal, a sidecar without its data file).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from merge_helpers import wait_for

from engine.merge import merge_files, merge_run, plan_run
from engine.merge.journal import JOURNAL_NAME, Journal
from engine.metadata import sidecar_path
from engine.verify import verify_file

DEADLINE = 60.0
WORKER_EXIT_DEADLINE = 10.0  # a worker told (SIGTERM) that its parent died cleans up and exits
OUTPUTS = 6
pytestmark = pytest.mark.timeout(180)  # a hang fails here, not at the global limit


def live_members(pgid: int) -> list[int]:
    """Processes of a process group that are still running (zombies do not count)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            pids.append(int(entry))
    return pids


def describe(pids) -> str:
    lines = []
    for pid in pids:
        try:
            cmd = (
                open(f"/proc/{pid}/cmdline", "rb")
                .read()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
            wchan = open(f"/proc/{pid}/wchan").read()
        except OSError:
            continue
        lines.append(f"{pid} [{wchan}] {cmd[:160]}")
    return "; ".join(lines)


def concat_events(read_event_list, paths):
    return [event for path in paths for event in read_event_list(path)]


def planned_target(folder) -> int:
    total = sum(p.stat().st_size for p in folder.glob("*.tmb"))
    return int(total / (OUTPUTS - 0.5))


@pytest.mark.skipif(
    not os.path.isdir("/proc"), reason="needs /proc to see the killed run's processes"
)
@pytest.mark.parametrize("jobs", [1, 2])
def test_killed_merge_run_resumes(jobs, cli, tmb_big_run, tmp_path, read_event_list, leftovers):
    target = planned_target(tmb_big_run)
    plan = plan_run([tmb_big_run], target_size=target)
    names = [o.name for o in plan.outputs]
    assert len(names) == OUTPUTS
    out_dir = tmp_path / "out"
    command = [
        "merge-run",
        str(tmb_big_run),
        "--out-dir",
        str(out_dir),
        "--target-size",
        str(target),
        "--jobs",
        str(jobs),
    ]

    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "bindings.cli", *command, "--quiet"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:

        def first_published():
            if process.poll() is not None:
                raise AssertionError(
                    f"merge-run ended before it was killed ({process.returncode}): "
                    f"{(tmp_path / 'stderr.txt').read_text()}"
                )
            # published: the data file and its sidecar (the window between the two renames has a
            # test of its own below; landing in it here would make this test fail for that reason)
            return any(
                (out_dir / name).exists() and sidecar_path(out_dir / name).exists()
                for name in names
            )

        wait_for(first_published, what="the first published output")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=DEADLINE)
        # worker processes must notice their parent's death and stop (they clean up as they go)
        try:
            wait_for(
                lambda: not live_members(process.pid),
                deadline=WORKER_EXIT_DEADLINE,
                what="the killed run's worker processes to exit",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {describe(live_members(process.pid))}") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in live_members(process.pid):
            os.kill(pid, signal.SIGKILL)

    assert process.returncode == -signal.SIGKILL
    finished = [n for n in names if (out_dir / n).exists()]
    assert 1 <= len(finished) < len(names), f"the kill must land halfway; published: {finished}"
    before = {n: (out_dir / n).stat() for n in finished}
    with Journal(out_dir) as journal:
        states = {e.name: e.state for e in journal.entries()}
    assert set(states) == set(names)
    assert any(state == "merging" for state in states.values()), states

    result = cli(*command, "--json")

    assert result.code == 0, result.err
    report = result.json()
    assert report["ok"] is True and report["failures"] == []
    statuses = {os.path.basename(o["output"]): o["status"] for o in report["outputs"]}
    assert statuses == {n: ("already verified" if n in finished else "merged") for n in names}
    for name, stat in before.items():
        now = (out_dir / name).stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), (
            f"{name} was redone"
        )
    assert sorted(p.name for p in out_dir.glob("*.tmb")) == sorted(names)
    for planned in plan.outputs:
        out = out_dir / planned.name
        check = verify_file(out, metadata="auto")
        assert check.ok, check.error
        assert check.metadata_checked == "sidecar"
        assert read_event_list(out) == concat_events(read_event_list, planned.input_paths)
    assert leftovers(out_dir) == []
    assert sorted(os.listdir(out_dir)) == sorted(
        [JOURNAL_NAME, *names, *(f"{n}.json" for n in names)]
    )

    status = cli("status", out_dir, "--json")
    assert status.code == 0, status.err
    assert {row["name"]: row["state"] for row in status.json()["outputs"]} == {
        n: "verified" for n in names
    }
    assert status.json()["summary"] == {"verified": len(names)}


# -- the window between the two renames -----------------------------------------------------------
#
# Publishing an output is two renames (data file, sidecar; in either order).  These tests put a
# kill, a failure and a signal exactly between them, without depending on which comes first:
# the renames are recognised by their destination names.

KILL_BETWEEN_RENAMES = """
import os, sys
from pathlib import Path
from engine.merge import merge_run
folder, out_dir, target, victim = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
finals = {victim, victim + ".json"}
seen = set()

def watched(real):
    def call(src, dst, *args, **kwargs):
        name = Path(dst).name
        if Path(dst).parent == out_dir and name in finals:
            seen.add(name)
            if seen == finals:
                os._exit(137)          # SIGKILL right before the second rename: no cleanup at all
        return real(src, dst, *args, **kwargs)
    return call

os.replace, os.rename, os.link = watched(os.replace), watched(os.rename), watched(os.link)
merge_run([folder], out_dir, target_size=target)
sys.exit("the run finished without reaching the second rename of " + victim)
"""


def small_run_target(tmb_run) -> int:
    sizes = sorted(p.stat().st_size for p in tmb_run)
    return sizes[-1] + sizes[-2] + sizes[0] // 2  # 3 outputs of 2 inputs


def test_kill_between_the_two_renames_resumes(tmb_run, tmp_path, read_event_list, leftovers):
    folder = tmb_run[0].parent
    target = small_run_target(tmb_run)
    plan = plan_run([folder], target_size=target)
    victim = plan.outputs[1].name
    out_dir = tmp_path / "out"
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILL_BETWEEN_RENAMES,
            str(folder),
            str(out_dir),
            str(target),
            victim,
        ],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert killed.returncode == 137, killed.stderr
    # the kill landed between the renames: exactly one of the two names exists
    assert (out_dir / victim).exists() != sidecar_path(out_dir / victim).exists()

    report = merge_run([folder], out_dir, target_size=target)  # the rerun

    assert report.ok, report.failures
    assert sorted(o.output.name for o in report.outputs) == [o.name for o in plan.outputs]
    for planned in plan.outputs:
        check = verify_file(out_dir / planned.name, metadata="auto")
        assert check.ok and check.metadata_checked == "sidecar", check.error
        assert read_event_list(out_dir / planned.name) == concat_events(
            read_event_list, planned.input_paths
        )
    assert leftovers(out_dir) == []


def test_failure_after_the_data_file_is_named_leaves_both_or_neither(
    monkeypatch, tmb_run, tmp_path, leftovers
):
    """The last step of publishing the data file (fsync of the folder) fails, e.g. EIO on NFS."""
    import errno

    from engine import writer as writer_module
    from engine.errors import OutputError

    def failing_fsync_dir(folder):
        raise OSError(errno.EIO, "Input/output error", str(folder))

    monkeypatch.setattr(writer_module, "fsync_dir", failing_fsync_dir)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.tmb"
    with pytest.raises(OutputError, match="Input/output error"):
        merge_files(tmb_run[:2], out)
    assert out.exists() == sidecar_path(out).exists(), (
        f"data and sidecar parted: {sorted(os.listdir(out_dir))}"
    )
    assert leftovers(out_dir) == []


def test_a_signal_while_publishing_waits_until_both_are_published(
    monkeypatch, tmb_run, tmp_path, leftovers
):
    """SIGTERM (turned into ``Interrupted`` as the command line does) arrives between the two
    renames. The kernel hands a process-directed signal to any thread that does not block it, and
    the process has other threads (a live progress display, a queue feeder, a thread pool): here a
    helper thread receives it.  Publishing must still end with both names or neither."""
    import threading

    from bindings.cli import _raise_interrupted
    from engine import writer as writer_module
    from engine.errors import Interrupted
    from engine.fsutil import publish as real_fs_publish

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.tmb"
    finals = {out.name, sidecar_path(out).name}
    done = threading.Event()
    helper = threading.Thread(target=done.wait, name="helper")
    helper.start()
    seen = set()

    def signal_after_first_rename(name):
        seen.add(name)
        if len(seen) == 1:
            signal.pthread_kill(helper.ident, signal.SIGTERM)
            # let the helper thread take it for certain before the second rename (a signal that
            # lands later would prove nothing); deferred properly, it is handled after both renames
            time.sleep(0.05)

    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        result = real_replace(src, dst, *args, **kwargs)
        if Path(dst).name in finals and Path(dst).parent == out_dir:
            signal_after_first_rename(Path(dst).name)
        return result

    def fs_publish(tmp, final, *, overwrite):
        real_fs_publish(tmp, final, overwrite=overwrite)
        signal_after_first_rename(Path(final).name)

    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(writer_module, "publish", fs_publish)
        try:
            merge_files(tmb_run[:2], out)
            time.sleep(0.05)  # let a pending signal be handled here, if it was not earlier
        except Interrupted:
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        done.set()
        helper.join()
    assert seen, "publishing was not observed"
    assert out.exists() == sidecar_path(out).exists(), (
        f"data and sidecar parted: {sorted(os.listdir(out_dir))}"
    )
    assert leftovers(out_dir) == []


def test_interrupted_while_staging_the_sidecar_leaves_no_temporary(
    monkeypatch, tmb_run, tmp_path, leftovers
):
    """SIGINT/SIGTERM while the merged sidecar is being written (its fsync can take a while)."""

    class OsDyingInFsync:
        def __getattr__(self, name):
            return getattr(os, name)

        @staticmethod
        def fsync(fd):
            raise KeyboardInterrupt

    from engine import fsutil

    # only fsutil's fsync calls; the first of them in a merge is the sidecar's staging
    monkeypatch.setattr(fsutil, "os", OsDyingInFsync())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.tmb"
    with pytest.raises(KeyboardInterrupt):
        merge_files(tmb_run[:2], out)
    assert leftovers(out_dir) == []
    assert not out.exists() and not sidecar_path(out).exists()


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to see process states")
def test_temporaries_of_a_killed_writer_are_removed_before_it_is_reaped(
    cli, tmb_run, tmp_path, leftovers
):
    """A merge killed with its whole process group (a batch system's kill, the OOM killer) leaves
    its temporary output and staged sidecar, named after its pid.  Until its parent (init, in a
    container often a process that reaps late or never) reaps it, that pid is a zombie: dead,
    holding no file or lock, yet ``kill(pid, 0)`` still succeeds.  A rerun must remove them."""
    folder = tmb_run[0].parent
    target = small_run_target(tmb_run)
    plan = plan_run([folder], target_size=target)
    out_dir = tmp_path / "out"
    assert cli("merge-run", folder, "--out-dir", out_dir, "--target-size", target).code == 0
    gone = plan.outputs[0].name
    (out_dir / gone).unlink()
    sidecar_path(out_dir / gone).unlink()

    writer = subprocess.Popen([sys.executable, "-c", "pass"])  # exits at once and is not reaped yet
    try:
        wait_for(
            lambda: open(f"/proc/{writer.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z",
            what="the writer to be a zombie",
        )
        stale = [
            out_dir / f".{gone}.tmbpart-{writer.pid}-0badc0de",
            out_dir / f".{gone}.json.tmbpart-{writer.pid}-0badc0de",
        ]
        for path in stale:
            path.write_bytes(b"half a file")

        result = cli("merge-run", folder, "--out-dir", out_dir, "--target-size", target)

        assert result.code == 0, result.err
        assert (out_dir / gone).exists() and sidecar_path(out_dir / gone).exists()
        assert leftovers(out_dir) == [], "a dead writer's temporaries were kept"
    finally:
        writer.wait()


def test_a_temporary_whose_pid_was_reused_is_stale(tmp_path):
    """The pid in a temporary's name now belongs to a process started after the file was written
    (pid reuse): that process is not its writer, and the file is stale."""
    from engine.fsutil import stale_temporaries

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        old = tmp_path / f".m.tmb.tmbpart-{stranger.pid}-0badcafe"
        ours = tmp_path / f".n.tmb.tmbpart-{os.getpid()}-0badcafe"
        for path in (old, ours):
            path.write_bytes(b"partial")
        long_ago = time.time() - 3600
        os.utime(old, (long_ago, long_ago))  # written an hour before the stranger started
        assert stale_temporaries(tmp_path) == [old]
    finally:
        stranger.kill()
        stranger.wait()
