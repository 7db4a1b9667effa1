"""Merge a list of TMB files into one output: the streaming pipeline behind every mode.

Strategy, for one output:

1. Take the output's lock and pre-flight every input (``inputs.prepare_inputs``): structure,
   runs, duplicates, bookkeeping; nothing is created before these pass.
2. A producer thread streams the inputs' stored blocks in order (``iter_blocks``: header and
   stored-bytes digest checked per block, whole-file adler32 accumulated) into a bounded queue;
   the calling thread writes them verbatim (``TmbWriter.copy_block``), so reading, checking and
   writing overlap.  In safe and deep modes a read-back (``verify.readback``) re-reads each
   block from the output file just after it is written and checks it, and in deep mode decodes
   it on a pool of threads: one decode per block, overlapping the disk write.  The output's
   older bytes are sent to disk as it grows and, once read back, dropped from the page cache
   (``fsutil.Writeback``).  With ``skip_bad`` an input must be proven whole before its first
   byte is copied, so a look-ahead thread validates upcoming inputs while the current one is
   written, and a bad one is left out.
3. The output is finished under its temporary name; safe and deep modes then complete the
   post-merge dump verification (``verify.merged``) on it.  Only then are the sidecar and the
   data file published, in that order, with signals deferred between the two renames.  Any
   failure or signal before that removes the temporary file: nothing reaches the destination,
   and inputs are only ever opened for reading.

Memory: blocks are read into a few buffers lent over and over (``pool.BufferPool``: the queue's
``QUEUE_BLOCKS``, one being read, one being written), the read-back reads (and in deep mode
decodes) into two buffers per thread, and the indexes take 28 bytes per event: flat whatever
the merge's size.  Page cache: a few tens of MB of the output at a time.
"""

from __future__ import annotations

import logging
import os
import queue
import resource
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .. import __version__
from ..checksums import RunningAdler32
from ..errors import (
    AllInputsRejected,
    EngineError,
    Interrupted,
    OutputExists,
    OutputIsInput,
    UsageError,
)
from ..fsutil import remove_quietly, remove_stale_temporaries, same_file, write_staged
from ..host import peak_rss_bytes as own_peak_rss
from ..metadata import sidecar_path
from ..pool import BufferPool, PoolClosed
from ..progress import NullProgress
from ..remote import is_url, location
from ..units import plural
from ..verify.merged import verify_merged_output
from ..verify.readback import BlockReadback
from ..writer import TmbWriter, WrittenBlock
from .catalog import names_by_run, open_merge_catalog
from .inputs import PreparedInput, check_adler, prepare_inputs, validate_whole
from .lock import ExclusiveLock
from .report import InputOutcome, MergeReport
from .reproducible import merge_clock, output_uuid
from .spec import MergeSpec

log = logging.getLogger(__name__)
QUEUE_BLOCKS = 4  # blocks read ahead of the writer: enough slack, 5 MiB of buffer each
LOOKAHEAD_INPUTS = 2
#: Blocks smaller than this (uncompressed) are joined with their small neighbours, not copied as
#: they are: reading 4 KB blocks costs a read and a check each (a merged file of 1,000 of them reads
#: several times slower than one written in one go); the joined blocks are re-encoded, once.
COALESCE_BELOW = 32 << 10
_END = object()


def merge_files(
    inputs,
    output,
    spec: MergeSpec = MergeSpec(),
    *,
    progress=None,
    bookkeeping=None,
    label: str | None = None,
    catalog_checked: bool = False,
    planned: dict | None = None,
) -> MergeReport:
    """Merge ``inputs`` (in order) into ``output``; see the module docstring.

    ``bookkeeping(path) -> metadata | None`` supplies each input's catalogue record (default: its
    sidecar).  ``catalog_checked``: the caller (merge-run) fetched the records (``bookkeeping``)
    and checked the inputs not merged; no catalogue is opened here.  ``planned``: {input: identity}
    as merge-run planned them; an input that is no longer that file is refused (``InputChanged``)
    and nothing is published.  Returns a ``MergeReport``;
    raises an ``EngineError`` when nothing was published.
    """
    if is_url(output):  # written and verified locally, then staged out (``remote.stageout``)
        from ..remote.stageout import merge_to_remote

        return merge_to_remote(
            inputs, location(output), spec, progress=progress, bookkeeping=bookkeeping, label=label
        )
    started = time.perf_counter()
    output = Path(output)
    progress = progress or NullProgress()
    if not output.parent.is_dir():
        raise UsageError(f"output folder {output.parent} does not exist", path=output)
    refuse_output_among_inputs(output, inputs)
    if output.exists() and not spec.force:
        raise OutputExists("output exists (use --force to replace it)", path=output)
    with ExclusiveLock(output), open_merge_catalog(None if catalog_checked else spec) as catalog:
        # what a merge to this output killed earlier (kill -9, OOM) left: its owner is gone
        remove_stale_temporaries(output.parent, names=(output.name, sidecar_path(output).name))
        check_input = None
        if catalog is not None and catalog.queryable:
            catalog.prefetch(inputs)
            bookkeeping = bookkeeping or catalog.metadata
            check_input = lambda path: catalog.check_not_merged(path, output_name=output.name)  # noqa: E731
        prepared = prepare_inputs(
            inputs, spec, bookkeeping=bookkeeping, check_input=check_input, planned=planned
        )
        log.debug("%s: merging %s, %s mode", output, plural(len(prepared), "input"), spec.mode)
        try:
            if spec.expect_complete:
                catalog.check_complete(
                    names_by_run(
                        (p.path.name, r) for p in prepared if p.error is None for r in p.runs
                    )
                )
            report = _merge_prepared(prepared, output, spec, progress, label or output.name)
        finally:
            for item in prepared:
                item.close()
        log.info(
            "%s: published, %s from %s",
            output,
            plural(report.event_count, "event"),
            plural(len(report.accepted), "input"),
        )
        if spec.declare:
            from .after_verified import AfterVerified

            AfterVerified(catalog, spec)(report)
        if catalog is not None:
            report.catalog = catalog.budget
    report.seconds = time.perf_counter() - started
    report.peak_rss_bytes = peak_rss_bytes()
    return report


def refuse_output_among_inputs(output: Path, inputs) -> None:
    """An output (or its sidecar) may never be one of the inputs (or their sidecars): not by name,
    not through a symlink, not as a hard link, with or without --force."""
    from ..remote import is_url

    written = (output, sidecar_path(output))
    for given in inputs:
        if is_url(given) or is_url(str(given)):
            continue  # a remote input is read where it is; the output is written here
        for read in (Path(given), sidecar_path(Path(given))):
            if any(same_file(read, item) for item in written):
                raise OutputIsInput(
                    f"the output is one of the inputs ({given}); a merge never writes over "
                    "what it reads, even with --force",
                    path=output,
                )


def peak_rss_bytes() -> int:
    """This process's own peak resident size (``engine.host``); ``ru_maxrss`` where there is no
    ``/proc``."""
    return own_peak_rss() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _merge_prepared(
    prepared: list[PreparedInput], output: Path, spec: MergeSpec, progress, label
) -> MergeReport:
    outcomes = {
        id(p): InputOutcome(p.path, False, reason=p.error.to_dict()) for p in prepared if p.error
    }
    good = [p for p in prepared if p.error is None]
    progress.start(
        label=label,
        files=len(good),
        events=sum(p.reader.event_count for p in good),
        bytes=sum(p.reader.file_size for p in good),
    )
    clock = merge_clock(spec.reproducible, [p.reader.metadata.get("created") for p in good])
    started_at = clock()
    runs = sorted({r for p in good for r in p.runs})
    run_type = _run_type([(p.path.name, p.bookkeeping or p.reader.metadata) for p in good])
    header_md = {
        "application": {"family": "tmbmerge", "name": "tmbmerge", "version": __version__},
        "data_tier": spec.data_tier,
        "runs": [[r, 0, run_type] for r in runs],
        "merge": {"mode": spec.mode, "inputs": [p.path.name for p in good]},
        "created": started_at,
    }
    accepted: list[PreparedInput] = []
    file_uuid = output_uuid(header_md, [p.reader.uuid for p in good])
    with TmbWriter(
        output,
        metadata=header_md,
        overwrite=spec.force,
        fsync=spec.fsync,
        drop_behind=True,
        file_uuid=file_uuid,
    ) as writer:
        readback = None
        if spec.checks_bookkeeping:
            # deep: one decoder more than the thread budget, as each also waits on its read-back
            # pread and the reading and writing threads come and go (2.2 GB on 2 cores, before
            # early writeback: 0.46x of all-core zstd with 2 decoders, 0.51-0.52x with 3, 0.46x
            # with 4; since, 2-4 decoders measure alike, 0.50-0.57x); safe only hashes, at
            # several GB/s: one thread
            readback = BlockReadback(
                writer.tmp_path,
                threads=spec.threads + 1 if spec.decodes_events else 1,
                decode=spec.decodes_events,
                name=output,
            )
            writer.keep_cached_from(lambda: readback.read_through)
        try:
            _copy(good, spec, writer, readback, outcomes, accepted, progress)
            if readback is not None:
                readback.close()
        except BaseException:
            if readback is not None:
                readback.abandon()
            raise
        bytes_in = sum(item.reader.file_size for item in accepted)
        if not accepted:
            raise AllInputsRejected([p.error for p in prepared if p.error is not None], path=output)
        result = writer.finish()
        if readback is not None:
            verify_merged_output(
                result.path,
                expected_events=[p.reader for p in accepted],
                expected_adler32=result.adler32,
                expected_size=result.file_size,
                blocks_read_back=readback,
                name=output,
            )
        metadata = _merged_metadata(
            accepted,
            [p for p in prepared if p.error is not None],
            output,
            result,
            spec,
            started_at,
            clock(),
        )
        sidecar = _StagedSidecar(output, metadata)
        published = False
        try:
            with _signals_deferred():
                # sidecar first: a kill in between leaves a sidecar that the next attempt replaces,
                # never a data file without its metadata
                sidecar.publish()
                try:
                    writer.publish()
                except BaseException:
                    sidecar.withdraw()
                    raise
                published = True
        except KeyboardInterrupt as exc:  # a signal deferred while publishing arrives now
            if published:
                raise Interrupted(*exc.args, published=[str(output)]) from exc
            raise
        finally:
            sidecar.discard()
    for item in accepted:
        outcomes[id(item)] = InputOutcome(
            item.path,
            True,
            item.reader.event_count,
            item.reader.file_size,
            getattr(item, "adler32", None),
        )
    return MergeReport(
        output=output,
        mode=spec.mode,
        inputs=[outcomes[id(p)] for p in prepared],
        file_size=result.file_size,
        adler32=result.adler32,
        event_count=result.event_count,
        block_count=result.block_count,
        bytes_in=bytes_in,
        verified=spec.checks_bookkeeping,
        metadata=metadata,
    )


# -- streaming ---------------------------------------------------------------------------------


def _copy(good, spec: MergeSpec, writer: TmbWriter, readback, outcomes, accepted, progress) -> None:
    """Write every block of every accepted input, in order; record what was left out.

    Blocks of at least ``COALESCE_BELOW`` uncompressed bytes are copied verbatim.  Consecutive
    smaller ones (the only block of a tiny input, say) are decoded, their digests and events
    checked before any of their bytes reach the output, and joined into blocks of the usual size
    (``TmbWriter.coalesce_block``), so that the output reads like a file written in one go; a small
    block with no small neighbour is copied verbatim, undecoded.

    Progress counts each input's blocks as they are written, and the rest of its size (header,
    index, trailer; all of it when it is left out) once it is done: the display ends at 100%."""
    copied: dict[int, int] = {}
    for item, event in _stream(good, spec):
        if event == "rejected":
            log.info("%s: left out (--skip-bad): %s", item.path, item.error)
            outcomes[id(item)] = InputOutcome(item.path, False, reason=item.error.to_dict())
            progress.advance(files=1, bytes=item.reader.file_size - copied.pop(id(item), 0))
            item.close()
        elif event == "done":
            accepted.append(item)
            progress.advance(
                files=1,
                events=item.reader.event_count,
                bytes=item.reader.file_size - copied.pop(id(item), 0),
            )
        else:
            copied[id(item)] = copied.get(id(item), 0) + event.size
            origin = (item.path, event.number, event.offset)
            if event.header.uncompressed_length < COALESCE_BELOW:
                kept = event._replace(
                    stored=bytes(event.stored), lease=None
                )  # the lease goes back below
                written = writer.coalesce_block(
                    kept.header,
                    kept.stored,
                    kept.events,
                    lambda block=kept, reader=item.reader: reader.decode(block).records,
                    kept.adler32,
                    origin=origin,
                )
            else:
                written = writer.flush_coalesced()
                number = writer.block_count
                offset = writer.copy_block(event.header, event.stored, event.events, event.adler32)
                written.append(WrittenBlock(number, offset, event.header, event.events, origin))
            if event.lease is not None:
                event.lease.release()  # written (or copied out): the buffer goes back to the reader
            _read_back(readback, written)
            progress.advance(bytes=event.size)
    _read_back(readback, writer.flush_coalesced())


def _read_back(readback, written) -> None:
    if readback is not None:  # it reads each block back from the output file itself
        for block in written:
            readback.submit(
                block.number, block.offset, block.header, block.events, origin=block.origin
            )


def _stream(good: list[PreparedInput], spec: MergeSpec):
    """Yield (input, block) for every block to copy, (input, "done") after each accepted input and
    (input, "rejected") for inputs left out, produced on a thread into a bounded queue."""
    q: queue.Queue = queue.Queue(maxsize=QUEUE_BLOCKS)
    # the queue's blocks, the one being written and the one being read: no allocation per block
    buffers = BufferPool(QUEUE_BLOCKS + 2)
    stop = threading.Event()

    def put(item) -> None:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def produce() -> None:
        try:
            _produce(good, spec, put, buffers)
            put(_END)
        except (_Stopped, PoolClosed):
            pass
        except BaseException as exc:  # handed to the consumer, which re-raises it
            try:
                put(exc)
            except _Stopped:
                pass

    thread = threading.Thread(target=produce, name="tmb-read", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        buffers.close()
        thread.join()


class _Stopped(Exception):
    """The consumer went away; the producer ends quietly."""


def _produce(good: list[PreparedInput], spec: MergeSpec, put, buffers: BufferPool) -> None:
    if spec.skip_bad:
        from concurrent.futures import ThreadPoolExecutor  # only here: it imports logging

        with ThreadPoolExecutor(1, thread_name_prefix="tmb-validate") as pool:
            pending: list = []
            upcoming = iter(good)
            for item in good:
                while len(pending) < LOOKAHEAD_INPUTS:
                    nxt = next(upcoming, None)
                    if nxt is None:
                        break
                    pending.append(pool.submit(validate_whole, nxt, spec))
                try:
                    pending.pop(0).result()
                except EngineError as exc:
                    item.error = exc.with_path(item.path)
                    put((item, "rejected"))
                    continue
                # digests re-checked as copied; each block's adler32 spares the writer hashing it
                for block in item.reader.iter_blocks(RunningAdler32(), pool=buffers):
                    put((item, block))
                item.reader.release()
                put((item, "done"))
        return
    for item in good:
        adler = RunningAdler32()
        for block in item.reader.iter_blocks(adler, pool=buffers):
            put((item, block))
        item.reader.release()  # one input open at a time (a few with --skip-bad)
        check_adler(item, adler.value, spec)
        put((item, "done"))


# -- the merged file's metadata ---------------------------------------------------------------


def _merged_metadata(
    accepted, rejected, output: Path, result, spec: MergeSpec, started_at: str, ended_at: str
) -> dict:
    from ..metadata import merged_metadata

    inputs = []
    for item in accepted:
        md = item.bookkeeping if item.bookkeeping is not None else _header_bookkeeping(item)
        inputs.append((item.path.name, md))
    run_type = _run_type(inputs)
    return merged_metadata(
        inputs,
        file_name=output.name,
        file_size=result.file_size,
        adler32=result.adler32,
        event_count=result.event_count,
        first_event=result.first_event,
        last_event=result.last_event,
        runs=[[r, 0, run_type] for r in result.runs],
        merge_mode=spec.mode,
        application={"family": "tmbmerge", "name": "tmbmerge", "version": __version__},
        start_time=started_at,
        end_time=ended_at,
        skipped=[{"file_name": p.path.name, "reason": str(p.error)} for p in rejected],
        data_tier=spec.data_tier,
    )


HEADER_BOOKKEEPING_KEYS = ("data_tier", "application", "runs", "data_stream", "group", "file_type")


def _header_bookkeeping(item: PreparedInput) -> dict:
    """What an input's own header says, standing in for bookkeeping in fast mode."""
    md = {
        key: item.reader.metadata[key]
        for key in HEADER_BOOKKEEPING_KEYS
        if key in item.reader.metadata
    }
    md.update(
        file_name=item.path.name,
        file_format="tmb",
        event_count=item.reader.event_count,
        file_size=item.reader.file_size,
    )
    return md


def _run_type(inputs) -> str:
    for _, md in inputs:
        for entry in md.get("runs") or []:
            if isinstance(entry, (list, tuple)) and len(entry) >= 3:
                return entry[2]
    return "physics"


class _StagedSidecar:
    """The output's sidecar, written and fsynced beside it before the data file is published."""

    def __init__(self, output: Path, metadata: dict):
        from ..metadata import sidecar_bytes, sidecar_path

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
