"""The output of a merge as one transaction (``OutputTransaction``): nothing is at the
destination until the output is proven, then all of it is.

Everything about the output file happens here, and only here: whether it may be written at
all (its folder exists, it is none of the inputs, it does not exist unless ``force``), the
lock that keeps a second merge off it, the temporary files a killed merge left beside it, the
writer and its temporary file, the read-back (safe and deep modes), which bytes may leave the
page cache, the post-merge check and the publication.  In order::

    with OutputTransaction(output, inputs, spec) as transaction:   # refused, or locked
        transaction.start(prepared)          # temporary file, writer, read-back
        ...                                  # the stream copies every block (pipeline)
        verified = transaction.verify(prepared)   # finished, checked: a VerifiedOutput
        report = transaction.publish(verified)    # sidecar, then data: a MergeReport

Leaving the ``with`` block before ``publish`` (an error, a signal) removes the temporary file
and the staged sidecar: nothing reaches the destination.

Page cache: the writer starts the disk write of the output's older bytes as the file grows
and drops them from the page cache once written (``drop_behind``); the read-back still has to
read the newest blocks through it, so nothing from the offset it has read up to is dropped
(``_still_to_read_from``).  A merge thus keeps a few tens of MB of its output cached, whatever
its size.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..errors import AllInputsRejected, Interrupted, OutputExists, OutputIsInput, UsageError
from ..fsutil import remove_quietly, remove_stale_temporaries, same_file, write_staged
from ..metadata import merged_metadata, sidecar_bytes, sidecar_path
from ..remote import is_url
from ..units import plural
from ..writer import TmbWriter, WriteResult
from .inputs import PreparedInput, PreparedInputs
from .lock import ExclusiveLock
from .report import MergeReport
from .reproducible import merge_clock, output_uuid
from .spec import MergeSpec

if TYPE_CHECKING:
    from ..verify.readback import BlockReadback

log = logging.getLogger(__name__)

APPLICATION = {"family": "tmbmerge", "name": "tmbmerge", "version": __version__}


@dataclass
class VerifiedOutput:
    """An output finished under its temporary name and, in safe and deep modes, proven equal
    to its inputs (``verified``); ``record`` is the SAM metadata its sidecar will hold."""

    written: WriteResult
    record: dict
    verified: bool


class OutputTransaction:
    """One output, from refusal or lock to publication (see the module docstring)."""

    def __init__(self, output, inputs, spec: MergeSpec):
        self.output = Path(output)
        self.spec = spec
        if not self.output.parent.is_dir():
            raise UsageError(f"output folder {self.output.parent} does not exist", path=output)
        refuse_output_among_inputs(self.output, inputs)
        if self.output.exists() and not spec.force:
            raise OutputExists("output exists (use force=True to replace it)", path=self.output)
        self._lock = ExclusiveLock(self.output)
        self.writer: TmbWriter | None = None
        self.readback: BlockReadback | None = None  # safe and deep modes
        self._clock: Callable[[], str] | None = None
        self._started_at = ""

    def __enter__(self) -> OutputTransaction:
        self._lock.acquire()
        try:
            # what a merge to this output killed earlier (kill -9, OOM) left: its owner is gone
            remove_stale_temporaries(
                self.output.parent, names=(self.output.name, sidecar_path(self.output).name)
            )
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.readback is not None:
                self.readback.abandon()  # a no-op once closed
            if self.writer is not None:
                self.writer.abort()  # a no-op once published
        finally:
            self._lock.release()

    # -- the temporary file ---------------------------------------------------------------
    def start(self, prepared: PreparedInputs) -> None:
        """Create the temporary file with the merged header, its writer, and in safe and deep
        modes the read-back that checks every block as it is written."""
        good = prepared.good
        spec = self.spec
        clock = merge_clock(spec.reproducible, [p.reader.metadata.get("created") for p in good])
        self._clock, self._started_at = clock, clock()
        header = {
            "application": APPLICATION,
            "data_tier": spec.data_tier,
            "runs": [
                [r, 0, _run_type(good)] for r in sorted({r for p in good for r in p.runs or ()})
            ],
            "merge": {"mode": spec.mode, "inputs": [p.path.name for p in good]},
            "created": self._started_at,
        }
        self.writer = TmbWriter(
            self.output,
            metadata=header,
            overwrite=spec.force,
            fsync=spec.fsync,
            drop_behind=True,
            file_uuid=output_uuid(header, [p.reader.uuid for p in good]),
        )
        if spec.verifies:
            from ..verify.readback import BlockReadback

            # deep: one decoder more than the thread budget, as each also waits on its read-back
            # pread and the reading and writing threads come and go (2.2 GB on 2 cores, before
            # early writeback: 0.46x of all-core zstd with 2 decoders, 0.51-0.52x with 3, 0.46x
            # with 4; since, 2-4 decoders measure alike, 0.50-0.57x); safe only hashes, at
            # several GB/s: one thread
            self.readback = BlockReadback(
                self.writer.tmp_path,
                threads=spec.threads + 1 if spec.decodes_events else 1,
                decode=spec.decodes_events,
                name=self.output,
            )
            self.writer.keep_cached_from(self._still_to_read_from)

    def _still_to_read_from(self) -> int:
        """The page-cache policy's one input: bytes from this offset on are still to be read
        back through the page cache, so they stay there."""
        return self.readback.read_through if self.readback is not None else 0

    # -- finished and proven ----------------------------------------------------------------
    def verify(self, prepared: PreparedInputs) -> VerifiedOutput:
        """Finish the file (index, trailer, fsync; still under its temporary name) and, in safe
        and deep modes, prove it: every block read back, the post-merge check
        (``verify.merged``).  Its record is made from the inputs merged."""
        assert self.writer is not None and self._clock is not None
        if self.readback is not None:
            self.readback.close()  # every block read back and checked, or its first failure
        merged = prepared.merged
        if not merged:
            raise AllInputsRejected([p.error for p in prepared.rejected], path=self.output)
        written = self.writer.finish()
        if self.readback is not None:
            from ..verify.merged import verify_merged_output

            verify_merged_output(
                written.path,
                expected_events=[p.reader for p in merged],
                written=written,
                read_back=self.readback.read_back(),
                name=self.output,
            )
        # every input merged holds events (``prepare_inputs``): the output has a first and a last
        assert written.first_event is not None and written.last_event is not None
        record = merged_metadata(
            [(p.path.name, _input_record(p)) for p in merged],
            file_name=self.output.name,
            file_size=written.file_size,
            adler32=written.adler32,
            event_count=written.event_count,
            first_event=written.first_event,
            last_event=written.last_event,
            runs=[[r, 0, _run_type(merged)] for r in written.runs],
            merge_mode=self.spec.mode,
            application=APPLICATION,
            start_time=self._started_at,
            end_time=self._clock(),
            skipped=[{"file_name": p.path.name, "reason": str(p.error)} for p in prepared.rejected],
            data_tier=self.spec.data_tier,
            agreed=prepared.agreed,
        )
        return VerifiedOutput(written, record, self.spec.verifies)

    def publish(self, verified: VerifiedOutput, prepared: PreparedInputs) -> MergeReport:
        """Sidecar first, then the data file, with signals deferred between the two renames: a
        kill in between leaves a sidecar that the next attempt replaces, never a data file
        without its metadata.  Returns the report of the published output."""
        assert self.writer is not None
        sidecar = _StagedSidecar(self.output, verified.record)
        published = False
        try:
            with _signals_deferred():
                sidecar.publish()
                try:
                    self.writer.publish()
                except BaseException:
                    sidecar.withdraw()
                    raise
                published = True
        except KeyboardInterrupt as exc:  # a signal deferred while publishing arrives now
            if published:
                raise Interrupted(*exc.args, published=[str(self.output)]) from exc
            raise
        finally:
            sidecar.discard()
        written = verified.written
        log.info(
            "%s: published, %s from %s",
            self.output,
            plural(written.event_count, "event"),
            plural(len(prepared.merged), "input"),
        )
        return MergeReport(
            output=self.output,
            mode=self.spec.mode,
            inputs=prepared.outcomes(),
            file_size=written.file_size,
            adler32=written.adler32,
            event_count=written.event_count,
            block_count=written.block_count,
            bytes_in=sum(p.reader.file_size for p in prepared.merged),
            verified=verified.verified,
            metadata=verified.record,
        )


def refuse_output_among_inputs(output: Path, inputs) -> None:
    """An output (or its sidecar) may never be one of the inputs (or their sidecars): not by name,
    not through a symlink, not as a hard link, with or without --force."""
    written = (output, sidecar_path(output))
    for given in inputs:
        if is_url(given) or is_url(str(given)):
            continue  # a remote input is read where it is; the output is written here
        for read in (Path(given), sidecar_path(Path(given))):
            if any(same_file(read, item) for item in written):
                raise OutputIsInput(
                    f"the output is one of the inputs ({given}); a merge never writes over "
                    "what it reads, even with force=True",
                    path=output,
                )


#: What an input's own header says, standing in for its record in fast mode.
HEADER_RECORD_KEYS = ("data_tier", "application", "runs", "data_stream", "group", "file_type")


def _input_record(item: PreparedInput) -> dict:
    """An input's record, or in fast mode (no records read) what its header says."""
    if item.record is not None:
        return item.record
    header = item.reader.metadata
    md = {key: header[key] for key in HEADER_RECORD_KEYS if key in header}
    md.update(
        file_name=item.path.name,
        file_format="tmb",
        event_count=item.reader.event_count,
        file_size=item.reader.file_size,
    )
    return md


def _run_type(inputs: list[PreparedInput]) -> str:
    """The run type the inputs' records (or headers) give, "physics" if none does."""
    for item in inputs:
        md = item.record or item.reader.metadata
        for entry in md.get("runs") or []:
            if isinstance(entry, (list, tuple)) and len(entry) >= 3:
                return entry[2]
    return "physics"


class _StagedSidecar:
    """The output's sidecar, written and fsynced beside it before the data file is published."""

    def __init__(self, output: Path, metadata: dict):
        self.final = sidecar_path(output)
        self.tmp = write_staged(self.final, sidecar_bytes(metadata))

    def publish(self) -> None:
        os.replace(self.tmp, self.final)

    def discard(self) -> None:
        remove_quietly(self.tmp)

    def withdraw(self) -> None:
        """Remove the published sidecar again (its data file could not be published)."""
        remove_quietly(self.final)


@contextmanager
def _signals_deferred():
    """SIGINT and SIGTERM wait until the block ends (publishing is two renames that belong
    together).

    The Python-level handlers are swapped for one that only records the signal: a mask would not
    do, since the kernel may hand a process-directed signal to any other thread, and CPython then
    runs the handler in the main thread all the same.  The first signal recorded is replayed after.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: received.append(signum))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            handler = previous[signal.Signals(received[0])]
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(received[0])
