"""Merge a list of TMB files into one output: ``merge_files``, and the stream behind every mode.

A merge is four stages, each a type:

1. ``inputs.PreparedInputs``: every input opened and crosschecked with its record (sidecar or
   catalogue) before anything is created: structure, runs, duplicates, agreement, not merged
   twice; the adler32 crosscheck waits for the stream to have read the input.
2. ``output.OutputTransaction``: the output refused (exists, is an input) or locked, then
   written to a temporary file.  A producer thread streams the inputs' stored blocks in order
   (``iter_blocks``: header and stored-bytes digest checked per block, whole-file adler32
   accumulated) into a bounded queue; the calling thread writes them verbatim
   (``TmbWriter.copy_block``), so reading, checking and writing overlap.  In safe and deep modes
   a read-back (``verify.readback``) re-reads each block from the output file just after it is
   written and checks it, and in deep mode decodes it on a pool of threads.  With ``skip_bad``
   an input must be proven whole before its first byte is copied, so a look-ahead thread
   validates upcoming inputs while the current one is written, and a bad one is left out.
3. ``output.VerifiedOutput``: the file finished under its temporary name and, in safe and deep
   modes, proven equal to its inputs (``verify.merged``); then published, sidecar first.  Any
   failure or signal before that removes the temporary file: nothing reaches the destination,
   and inputs are only ever opened for reading.
4. ``after_verified.AfterVerified``: the published output declared (``--declare``); merge-run
   also retires its inputs there.

Memory: blocks are read into a few buffers lent over and over (``pool.BufferPool``: the queue's
``QUEUE_BLOCKS``, one being read, one being written), the read-back reads (and in deep mode
decodes) into two buffers per thread, and the indexes take 28 bytes per event: flat whatever
the merge's size.  Page cache: a few tens of MB of the output at a time (``output``).
"""

from __future__ import annotations

import logging
import queue
import resource
import threading
import time
from pathlib import Path

from ..checksums import RunningAdler32
from ..errors import EngineError
from ..host import peak_rss_bytes as own_peak_rss
from ..interrupts import raise_if_stopped
from ..pool import BufferPool, PoolClosed
from ..progress import NullProgress
from ..remote import is_url, location
from ..units import plural
from ..writer import WrittenBlock
from .catalog import open_merge_catalog
from .inputs import PreparedInput, PreparedInputs, prepare_inputs, validate_whole
from .output import OutputTransaction
from .report import MergeReport
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
    spec: MergeSpec = MergeSpec(),  # noqa: B008 (frozen: one shared default is safe)
    *,
    progress=None,
    records=None,
    label: str | None = None,
    catalog_checked: bool = False,
    planned: dict | None = None,
) -> MergeReport:
    """Merge ``inputs`` (in order) into ``output``; see the module docstring.

    ``records(path) -> record | None`` supplies each input's record (default: its sidecar, or
    with ``spec.catalog`` its catalogue record).  ``catalog_checked``: the caller (merge-run)
    fetched the records (``records``) and checked the inputs not merged; no catalogue is opened
    here.  ``planned``: {input: identity} as merge-run planned them; an input that is no longer
    that file is refused (``InputChanged``) and nothing is published.  Returns a ``MergeReport``;
    raises an ``EngineError`` when nothing was published.
    """
    if is_url(output):  # written and verified locally, then staged out (``remote.stageout``)
        from ..remote.stageout import merge_to_remote

        return merge_to_remote(
            inputs, location(output), spec, progress=progress, records=records, label=label
        )
    started = time.perf_counter()
    output = Path(output)
    with (
        OutputTransaction(output, inputs, spec) as transaction,
        open_merge_catalog(None if catalog_checked else spec) as catalog,
    ):
        with prepare_inputs(
            inputs,
            spec,
            records=records,
            catalog=catalog,
            output_name=output.name,
            planned=planned,
        ) as prepared:
            log.debug(
                "%s: merging %s, %s mode", output, plural(len(prepared.items), "input"), spec.mode
            )
            transaction.start(prepared)
            _copy(prepared, spec, transaction, progress or NullProgress(), label or output.name)
            verified = transaction.verify(prepared)
            report = transaction.publish(verified, prepared)
        if spec.declare:
            from .after_verified import AfterVerified

            AfterVerified(catalog, spec)(report)
        if catalog is not None:
            report.catalog = catalog.budget
    report.seconds = time.perf_counter() - started
    report.peak_rss_bytes = peak_rss_bytes()
    return report


def peak_rss_bytes() -> int:
    """This process's own peak resident size (``engine.host``); ``ru_maxrss`` where there is no
    ``/proc``."""
    return own_peak_rss() or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- streaming ---------------------------------------------------------------------------------


def _copy(
    prepared: PreparedInputs, spec: MergeSpec, transaction: OutputTransaction, progress, label: str
) -> None:
    """Write every block of every accepted input, in order, into the transaction's output;
    mark each input merged or, with ``skip_bad``, left out (its ``error``).

    Blocks of at least ``COALESCE_BELOW`` uncompressed bytes are copied verbatim.  Consecutive
    smaller ones (the only block of a tiny input, say) are decoded, their digests and events
    checked before any of their bytes reach the output, and joined into blocks of the usual size
    (``TmbWriter.coalesce_block``), so that the output reads like a file written in one go; a small
    block with no small neighbour is copied verbatim, undecoded.

    Progress counts each input's blocks as they are written, and the rest of its size (header,
    index, trailer; all of it when it is left out) once it is done: the display ends at 100%."""
    good = prepared.good
    writer, readback = transaction.writer, transaction.readback
    assert writer is not None
    progress.start(
        label=label,
        files=len(good),
        events=sum(p.reader.event_count for p in good),
        bytes=sum(p.reader.file_size for p in good),
    )
    copied: dict[int, int] = {}
    for item, event in _stream(good, spec):
        raise_if_stopped()  # a stop whose own exception was lost (``engine.interrupts``)
        if event == "rejected":
            log.info("%s: left out (skip_bad=True): %s", item.path, item.error)
            progress.advance(files=1, bytes=item.reader.file_size - copied.pop(id(item), 0))
            item.close()
        elif event == "done":
            item.merged = True
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
        item.check_adler32(adler.value)
        put((item, "done"))
