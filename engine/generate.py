"""The synthetic run producer: unmerged TMB files of one run, as a reprocessing farm would leave
them.

Merging is developed and benchmarked on these files, so they look like the real thing where it
matters to a merge: one file per partition, named ``tmb_{run:010d}_p{partition:03d}.tmb``
(partitions may have gaps), event numbers strictly increasing across the run with small random
skips, log-normal event sizes around 15 kB with a thin tail of large events, payloads that
compress like physics data, and beside each file the SAM metadata its reconstruction job would
have declared (``<file>.json``).

Strategy: everything is a pure function of (seed, run, partition) through independent numpy
random streams, so files can be written in any order, by any number of processes, and come out
byte-identical (the header's UUID and creation time are derived too).  A run is planned in the
parent: partition numbers, and each partition's first event number (the event-number gaps of a
partition are cheap to draw, and skipped partitions still use up their event numbers, as a lost
file would).  Each file is then written by ``generate_file``: event sizes are drawn for the
whole file, cut into batches that end exactly where the writer cuts its blocks (so no batch
leaves a short block behind), and each batch's payloads are built with vectorized numpy (no
loop per event or per byte) and handed to ``TmbWriter.write_batch``.  Memory is one batch
(a few MiB) plus 12 bytes per event of the file.

Payload model (per event): a 32-byte header (magic, version, run, event, trigger mask, hit,
track and cluster counts, flags, bunch crossing), then 8-byte hits (uint16 channel ids rising
in small steps, uint16 ADC counts, float32 time), 24-byte tracks (six float32 parameters),
16-byte clusters (uint16 cell count and layer, three float32), and an 8-byte trailer cut to
fit the event size.  Values come from fixed inverse-CDF tables indexed by raw random bits;
floats keep 11 mantissa bits (limited precision, random-ish low bits).  Measured with zstd
level 3 on 4 MiB blocks: compression ratio 1.33 (tests/test_generate.py checks 1.1-1.5), and,
as with real packed detector data, zstd level 3 finds many short matches and compresses it at
only ~120 MB/s per core (level 1: ~800 MB/s, ratio 1.28); compression is most of the cost of
generating.  Files are written by worker processes rather than threads: building payloads is
numpy work that mostly holds the GIL, and threads measured ~35% slower on 2 cores.
"""

from __future__ import annotations

import hashlib
import uuid as uuidlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .checksums import format_adler32
from .errors import OutputExists, UsageError, os_reason
from .format import DEFAULT_BLOCK_BYTES, MAX_PAYLOAD_BYTES, RECORD_HEADER_SIZE
from .host import usable_cores
from .metadata import sidecar_path

# ---------------------------------------------------------------------------------------------
# What a reconstruction job of the time declared

DATA_TIER = "unmerged-thumbnail"
DATA_STREAM = "physics"
RUN_TYPE = "physics"
APPLICATION = {"family": "reco", "name": "d0reco", "version": "p17.09.03"}
GENERATOR_NAME = "tmbmerge generate"
PAYLOAD_MODEL = "d0-tmb-synthetic-1"

#: The reprocessing campaign's jobs start within ~90 days of this moment (Fermilab local time).
CAMPAIGN_START = datetime(2005, 3, 1, 8, 0, 0, tzinfo=timezone(timedelta(hours=-6)))
CAMPAIGN_DAYS = 90

MAX_PARTITION = 999  # three digits in the file name
MAX_RUN = 0xFFFFFFFF  # runs are uint32 in every record
BATCH_BYTES = 8 << 20  # uncompressed bytes handed to the writer at once (whole blocks)

# ---------------------------------------------------------------------------------------------
# Naming and planning


def file_name(run: int, partition: int) -> str:
    """The unmerged file of one partition: ``tmb_0000178000_p003.tmb``."""
    return f"tmb_{run:010d}_p{partition:03d}.tmb"


def raw_parent_name(run: int, partition: int) -> str:
    """The raw file a partition was reconstructed from."""
    return f"raw_{run:010d}_p{partition:03d}.raw"


def partition_numbers(first_partition: int, files: int, gap_every: int = 0) -> list[int]:
    """Partition numbers of ``files`` files; with ``gap_every`` G, one number is skipped after
    every G files."""
    if gap_every <= 0:
        return [first_partition + i for i in range(files)]
    return [first_partition + i + i // gap_every for i in range(files)]


def _rng(seed: int, run: int, partition: int, stream: int) -> np.random.Generator:
    """An independent random stream for one purpose of one partition."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(run, partition, stream)))
    )


STREAM_EVENT_GAPS, STREAM_SIZES, STREAM_PAYLOADS, STREAM_JOB_TIMES = range(4)


def event_gaps(seed: int, run: int, partition: int, n_events: int) -> np.ndarray:
    """Steps between consecutive event numbers (>= 1; mostly 1, as triggers skip a few numbers)."""
    return _rng(seed, run, partition, STREAM_EVENT_GAPS).geometric(0.8, n_events).astype(np.uint64)


def first_events(
    seed: int, run: int, partitions: list[int], events_per_file: int
) -> dict[int, int]:
    """The first event number of each partition, counting the events of every partition before it.

    Event k of partition p is number ``sum(gaps of partitions < p) + sum(gaps_p[0..k])``, so
    numbers rise strictly across the run, a skipped partition leaves a hole in the numbering,
    and the same partition gets the same numbers however the run is split into calls.
    """
    wanted = set(partitions)
    firsts, before = {}, 0
    for partition in range(max(partitions) + 1):
        gaps = event_gaps(seed, run, partition, events_per_file)
        if partition in wanted:
            firsts[partition] = before + int(gaps[0])
        before += int(gaps.sum())
    return firsts


def event_sizes(
    seed: int, run: int, partition: int, n_events: int, mean_event_kb: float
) -> np.ndarray:
    """Payload sizes in bytes: log-normal (sigma 0.4) with 0.3% noisy events 3-8 times larger.

    The mean is ``mean_event_kb`` (1 kB = 1000 bytes); sizes are clipped to [mean/3, mean*40/3],
    i.e. 5-200 kB at the default 15 kB, with ~99.5% of events below 60 kB.
    """
    rng = _rng(seed, run, partition, STREAM_SIZES)
    mean = mean_event_kb * 1000.0
    sigma, noisy_fraction, noisy_low, noisy_high = 0.4, 0.003, 3.0, 8.0
    median = mean / (
        np.exp(sigma**2 / 2) * (1 + noisy_fraction * ((noisy_low + noisy_high) / 2 - 1))
    )
    sizes = rng.lognormal(np.log(median), sigma, n_events)
    noisy = rng.random(n_events) < noisy_fraction
    sizes[noisy] *= rng.uniform(noisy_low, noisy_high, int(noisy.sum()))
    low, high = max(MIN_EVENT_BYTES, mean / 3), mean * 40 / 3
    return np.clip(np.rint(sizes), low, high).astype(np.uint32)


# ---------------------------------------------------------------------------------------------
# Payload model: structured records, vectorized over a batch of events

EVENT_HEADER = np.dtype(
    [
        ("magic", "<u2"),
        ("version", "<u2"),
        ("run", "<u4"),
        ("event", "<u8"),
        ("trigger", "<u4"),
        ("hits", "<u2"),
        ("tracks", "<u2"),
        ("clusters", "<u2"),
        ("flags", "<u2"),
        ("crossing", "<u4"),
    ]
)
HIT = np.dtype([("channel", "<u2"), ("adc", "<u2"), ("time", "<f4")])
TRACK = np.dtype(
    [("pt", "<f4"), ("eta", "<f4"), ("phi", "<f4"), ("d0", "<f4"), ("z0", "<f4"), ("chi2", "<f4")]
)
CLUSTER = np.dtype(
    [("cells", "<u2"), ("layer", "<u2"), ("energy", "<f4"), ("eta", "<f4"), ("phi", "<f4")]
)
UNIT = 8  # every record is a whole number of 8-byte units
HEADER_UNITS = EVENT_HEADER.itemsize // UNIT
TRACK_UNITS = TRACK.itemsize // UNIT
CLUSTER_UNITS = CLUSTER.itemsize // UNIT
assert (EVENT_HEADER.itemsize, HIT.itemsize, TRACK.itemsize, CLUSTER.itemsize) == (32, 8, 24, 16)
MIN_EVENT_BYTES = (HEADER_UNITS + 2) * UNIT  # header, one hit, trailer
EVENT_MAGIC, EVENT_VERSION = 0xD0E5, 3
TRACK_SHARE, CLUSTER_SHARE = 0.12, 0.18  # of an event's record units; hits take the rest
MANTISSA_BITS = 11


def _quantize(values: np.ndarray, mantissa_bits: int = MANTISSA_BITS) -> np.ndarray:
    """float32 keeping only the top ``mantissa_bits`` of the mantissa (limited precision)."""
    bits = values.astype(np.float32).view(np.uint32)
    return (bits & np.uint32((0xFFFFFFFF << (23 - mantissa_bits)) & 0xFFFFFFFF)).view(np.float32)


@lru_cache(maxsize=1)
def _tables() -> dict[str, np.ndarray]:
    """65536-entry tables of each quantity; indexing one with uniform uint16 bits samples it."""
    rng = np.random.Generator(np.random.PCG64(0xD0))
    n = 1 << 16
    return {
        "adc": np.clip(
            np.rint(6 + rng.exponential(30.0, n) + rng.normal(0, 2.0, n)), 0, 4095
        ).astype(np.uint16),
        "time": _quantize(rng.normal(0.0, 12.0, n)),  # ns
        "pt": _quantize(0.5 + rng.exponential(2.5, n)),  # GeV
        "eta": _quantize(rng.uniform(-2.5, 2.5, n)),
        "phi": _quantize(rng.uniform(-np.pi, np.pi, n)),
        "d0": _quantize(rng.normal(0.0, 0.02, n)),  # cm
        "z0": _quantize(rng.normal(0.0, 25.0, n)),  # cm
        "chi2": _quantize(rng.chisquare(3.0, n) / 3.0),
        "cells": (1 + rng.geometric(0.15, n)).clip(1, 400).astype(np.uint16),
        "layer": rng.integers(0, 96, n).astype(np.uint16),
        "energy": _quantize(rng.exponential(3.0, n)),  # GeV
        "trigger": rng.choice(
            np.array([0x1, 0x3, 0x11, 0x101, 0x1001, 0x8003, 0x40, 0x2041], np.uint32), n
        ),
    }


def _random_u16(bitgen: np.random.BitGenerator, count: int) -> np.ndarray:
    return bitgen.random_raw((count + 3) // 4).view(np.uint16)[:count]


def _exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=out[1:])
    return out


def _event_headers(
    bitgen, run: int, events: np.ndarray, n_hits, n_tracks, n_clusters
) -> np.ndarray:
    n = len(events)
    r = _random_u16(bitgen, 3 * n)
    header = np.empty(n, dtype=EVENT_HEADER)
    header["magic"], header["version"], header["run"], header["event"] = (
        EVENT_MAGIC,
        EVENT_VERSION,
        run,
        events,
    )
    header["trigger"] = _tables()["trigger"][r[:n]]
    header["hits"] = np.minimum(n_hits, 0xFFFF)
    header["tracks"] = np.minimum(n_tracks, 0xFFFF)
    header["clusters"] = np.minimum(n_clusters, 0xFFFF)
    header["flags"] = r[n : 2 * n] & 0x7
    header["crossing"] = r[2 * n :].astype(np.uint32) * 3 + 1
    return header


def _hits(bitgen, n_hits: np.ndarray) -> np.ndarray:
    """Hits of all events in order; within an event, channel ids rise in small steps from a random
    start."""
    t = _tables()
    n, total = len(n_hits), int(n_hits.sum())
    r = _random_u16(bitgen, 3 * total + n)
    steps = np.cumsum(1 + (r[:total] & 0x3F), dtype=np.uint32)
    before = np.concatenate([np.zeros(1, np.uint32), steps])[_exclusive_cumsum(n_hits)]
    offset = before - r[3 * total :].astype(np.uint32)
    hits = np.empty(total, dtype=HIT)
    hits["channel"] = (steps - np.repeat(offset, n_hits)).astype(np.uint16)
    hits["adc"] = t["adc"][r[total : 2 * total]]
    hits["time"] = t["time"][r[2 * total : 3 * total]]
    return hits


def _records_from_tables(bitgen, dtype: np.dtype, count: int) -> np.ndarray:
    """``count`` records whose every field is drawn from the table of the same name."""
    t = _tables()
    names = dtype.names or ()  # a record type: its fields
    r = _random_u16(bitgen, len(names) * count)
    records = np.empty(count, dtype=dtype)
    for k, name in enumerate(names):
        records[name] = t[name][r[k * count : (k + 1) * count]]
    return records


SECTION_HEADER, SECTION_HITS, SECTION_TRACKS, SECTION_CLUSTERS, SECTION_TRAILER = range(5)


def build_payloads(
    bitgen: np.random.BitGenerator, run: int, events: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """The payload bytes of a batch of events, back to back (event i is ``lengths[i]`` bytes).

    Each event is laid out in 8-byte units: header, hits, tracks, clusters, trailer.  A label
    per unit says which section it belongs to, so each section's records (drawn for the whole
    batch at once, in event order) drop into place with one masked assignment; the units past
    each event's length are cut off at the end.
    """
    n = len(lengths)
    length = lengths.astype(np.int64)
    event_units = (length + UNIT - 1) // UNIT
    body = event_units - HEADER_UNITS - 1
    n_tracks = (body * TRACK_SHARE).astype(np.int64) // TRACK_UNITS
    n_clusters = (body * CLUSTER_SHARE).astype(np.int64) // CLUSTER_UNITS
    n_hits = body - n_tracks * TRACK_UNITS - n_clusters * CLUSTER_UNITS
    section_units = np.stack(
        [
            np.full(n, HEADER_UNITS),
            n_hits,
            n_tracks * TRACK_UNITS,
            n_clusters * CLUSTER_UNITS,
            np.ones(n, dtype=np.int64),
        ],
        axis=1,
    )
    section = np.repeat(np.tile(np.arange(5, dtype=np.uint8), n), section_units.ravel())
    units = np.empty(len(section), dtype=np.uint64)
    units[section == SECTION_HEADER] = _event_headers(
        bitgen, run, events, n_hits, n_tracks, n_clusters
    ).view(np.uint64)
    units[section == SECTION_HITS] = _hits(bitgen, n_hits).view(np.uint64)
    units[section == SECTION_TRACKS] = _records_from_tables(
        bitgen, TRACK, int(n_tracks.sum())
    ).view(np.uint64)
    units[section == SECTION_CLUSTERS] = _records_from_tables(
        bitgen, CLUSTER, int(n_clusters.sum())
    ).view(np.uint64)
    units[section == SECTION_TRAILER] = bitgen.random_raw(n)  # a checksum word, say
    return _cut_to_lengths(units.view(np.uint8), event_units * UNIT, length)


def _cut_to_lengths(
    padded: np.ndarray, padded_lengths: np.ndarray, lengths: np.ndarray
) -> np.ndarray:
    """Drop the bytes past each event's length from the end of its last unit."""
    excess = padded_lengths - lengths
    if not excess.any():
        return padded
    ends = np.cumsum(padded_lengths)
    k = np.arange(1, UNIT, dtype=np.int64)
    drop = (ends[:, None] - k[None, :])[k[None, :] <= excess[:, None]]
    keep = np.ones(len(padded), dtype=bool)
    keep[drop] = False
    return padded[keep]


# ---------------------------------------------------------------------------------------------
# One file


def block_batches(
    lengths: np.ndarray, block_bytes: int, batch_bytes: int = BATCH_BYTES
) -> list[tuple[int, int]]:
    """Event ranges [start, stop) made of whole writer blocks, about ``batch_bytes`` each.

    Blocks are cut by the writer's rule (``TmbWriter.write_batch``): as many records as fit in
    ``block_bytes``, at least one.  Since the writer also closes a block at the end of each
    batch, batches must end on those cuts or every batch would leave a short block.
    """
    record_ends = np.cumsum(lengths.astype(np.int64) + RECORD_HEADER_SIZE)
    batches, batch_start, begin = [], 0, 0
    blocks_per_batch = max(1, batch_bytes // block_bytes)
    blocks_in_batch = 0
    while begin < len(lengths):
        base = int(record_ends[begin - 1]) if begin else 0
        begin = max(int(np.searchsorted(record_ends, base + block_bytes, side="right")), begin + 1)
        blocks_in_batch += 1
        if blocks_in_batch == blocks_per_batch or begin == len(lengths):
            batches.append((batch_start, begin))
            batch_start, blocks_in_batch = begin, 0
    return batches


class GeneratedFile(NamedTuple):
    """One generated file: its path, partition, events, size, adler32, event range and sidecar."""

    path: Path
    partition: int
    events: int
    size: int
    adler32: int
    first_event: int
    last_event: int
    sidecar: Path | None

    @property
    def checksum(self) -> str:
        """The file's adler32 as the catalogue writes it."""
        return format_adler32(self.adler32)

    def to_dict(self) -> dict:
        """The file as JSON-ready data."""
        return {
            "path": str(self.path),
            "partition": self.partition,
            "events": self.events,
            "size": self.size,
            "checksum": self.checksum,
            "first_event": self.first_event,
            "last_event": self.last_event,
            "sidecar": str(self.sidecar) if self.sidecar else None,
        }


def job_times(seed: int, run: int, partition: int, n_events: int) -> tuple[str, str]:
    """Plausible start and end of the reconstruction job (ISO 8601 with offset): 1.2-2.8 s per
    event."""
    rng = _rng(seed, run, partition, STREAM_JOB_TIMES)
    start = CAMPAIGN_START + timedelta(seconds=int(rng.integers(0, CAMPAIGN_DAYS * 86400)))
    end = start + timedelta(seconds=int(120 + n_events * rng.uniform(1.2, 2.8)))
    return start.isoformat(timespec="seconds"), end.isoformat(timespec="seconds")


def file_uuid(**parameters) -> uuidlib.UUID:
    """A UUID fixed by everything that decides a file's content (same parameters, same file)."""
    text = ",".join(f"{key}={parameters[key]!r}" for key in sorted(parameters))
    return uuidlib.UUID(bytes=hashlib.blake2b(text.encode(), digest_size=16).digest(), version=4)


def generate_file(
    path,
    *,
    run: int,
    partition: int,
    first_event: int,
    n_events: int,
    seed: int = 0,
    mean_event_kb: float = 15.0,
    codec: str = "zstd",
    level: int | None = None,
    threads: int = 1,
    overwrite: bool = False,
    sidecar: bool = True,
    fsync: bool = True,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> GeneratedFile:
    """Write one unmerged TMB file (and, with ``sidecar``, its ``<file>.json``) and describe it.

    Event numbers start at ``first_event`` and rise by this partition's gaps; sizes and
    payloads come from (seed, run, partition).  The same arguments give the same bytes.
    """
    from .writer import TmbWriter

    check_file_arguments(
        run=run,
        partition=partition,
        first_event=first_event,
        n_events=n_events,
        seed=seed,
        mean_event_kb=mean_event_kb,
    )
    path = Path(path)
    if sidecar and not overwrite and sidecar_path(path).exists():
        raise OutputExists(
            "sidecar exists (use overwrite=True to replace it)", path=sidecar_path(path)
        )
    gaps = event_gaps(seed, run, partition, n_events)
    events = np.cumsum(gaps, dtype=np.uint64)
    events -= events[0]
    events += np.uint64(first_event)
    del gaps
    lengths = event_sizes(seed, run, partition, n_events, mean_event_kb)
    start_time, end_time = job_times(seed, run, partition, n_events)
    generator = {
        "name": GENERATOR_NAME,
        "payload_model": PAYLOAD_MODEL,
        "seed": seed,
        "run": run,
        "partition": partition,
        "first_event": first_event,
        "events": n_events,
        "mean_event_kb": mean_event_kb,
    }
    header = {
        "application": APPLICATION,
        "data_tier": DATA_TIER,
        "runs": [[run, 0, RUN_TYPE]],
        "partition": partition,
        "data_stream": DATA_STREAM,
        "generator": generator,
        "created": end_time,
    }
    uuid = file_uuid(codec=codec, level=level, block_bytes=block_bytes, **generator)
    bitgen = _rng(seed, run, partition, STREAM_PAYLOADS).bit_generator
    with TmbWriter(
        path,
        metadata=header,
        codec=codec,
        level=level,
        block_bytes=block_bytes,
        threads=threads,
        overwrite=overwrite,
        file_uuid=uuid,
        fsync=fsync,
    ) as writer:
        for begin, end in block_batches(lengths, block_bytes):
            payloads = build_payloads(bitgen, run, events[begin:end], lengths[begin:end])
            writer.write_batch(
                np.full(end - begin, run, dtype=np.uint32),
                events[begin:end],
                lengths[begin:end],
                payloads,
            )
        result = writer.close()
    written = GeneratedFile(
        path,
        partition,
        result.event_count,
        result.file_size,
        result.adler32,
        int(events[0]),
        int(events[-1]),
        None,
    )
    if not sidecar:
        return written
    md = sidecar_metadata(written, run=run, start_time=start_time, end_time=end_time)
    return written._replace(sidecar=_write_sidecar(path, md))


def sidecar_metadata(written: GeneratedFile, *, run: int, start_time: str, end_time: str) -> dict:
    """The SAM metadata the reconstruction job would have declared for ``written``."""
    return {
        "file_name": written.path.name,
        "file_size": written.size,
        "checksum": [written.checksum],
        "event_count": written.events,
        "first_event": written.first_event,
        "last_event": written.last_event,
        "runs": [[run, 0, RUN_TYPE]],
        "data_tier": DATA_TIER,
        "file_format": "tmb",
        "file_type": "importedDetector",
        "data_stream": DATA_STREAM,
        "group": "dzero",
        "parents": [{"file_name": raw_parent_name(run, written.partition)}],
        "application": dict(APPLICATION),
        "start_time": start_time,
        "end_time": end_time,
    }


def _write_sidecar(path: Path, md: dict) -> Path:
    from .metadata import normalize_metadata, write_sidecar

    return write_sidecar(path, normalize_metadata(md))


MAX_MEAN_EVENT_KB = (
    MAX_PAYLOAD_BYTES * 3 / 40 / 1000
)  # the largest events (40/3 of the mean) still fit


def check_file_arguments(
    *, run: int, partition: int, first_event: int, n_events: int, seed: int, mean_event_kb: float
) -> None:
    """Refuse arguments no generated file can have (``UsageError``)."""
    if not 0 <= run <= MAX_RUN:
        raise UsageError(f"run {run} out of range 0..{MAX_RUN}")
    if not 0 <= partition <= MAX_PARTITION:
        raise UsageError(
            f"partition {partition} out of range 0..{MAX_PARTITION} (three digits in the file name)"
        )
    if n_events < 1:
        raise UsageError(f"events per file must be at least 1, not {n_events}")
    if first_event < 1:
        raise UsageError(f"first event number must be at least 1, not {first_event}")
    if seed < 0:
        raise UsageError(f"seed must be a non-negative integer, not {seed}")
    if not MIN_EVENT_BYTES / 1000 <= mean_event_kb <= MAX_MEAN_EVENT_KB:
        raise UsageError(
            f"mean event size {mean_event_kb} kB out of range "
            f"{MIN_EVENT_BYTES / 1000:g}..{MAX_MEAN_EVENT_KB:g} kB"
        )


# ---------------------------------------------------------------------------------------------
# A run


@dataclass(frozen=True)
class FileJob:
    """Everything one worker needs to write one file: plain data, picklable."""

    path: str
    run: int
    partition: int
    first_event: int
    n_events: int
    seed: int
    mean_event_kb: float
    codec: str
    level: int | None
    threads: int
    overwrite: bool
    fsync: bool


def _run_job(job: FileJob) -> GeneratedFile:
    return generate_file(**asdict(job))


def generate_run(
    outdir,
    *,
    run: int,
    files: int,
    events_per_file: int,
    seed: int = 0,
    first_partition: int = 0,
    mean_event_kb: float = 15.0,
    gap_every: int = 0,
    codec: str = "zstd",
    level: int | None = None,
    jobs: int | None = None,
    overwrite: bool = False,
    fsync: bool = True,
    progress: Callable[[GeneratedFile], None] | None = None,
) -> list[GeneratedFile]:
    """Write ``files`` unmerged TMB files of ``run`` into ``outdir`` (created if missing), with
    sidecars.

    ``jobs`` files are written at once in worker processes (default: one per core); each
    writer compresses on ``cores // jobs`` threads.  ``progress`` is called in this process
    with each file, in partition order, as soon as it and every file before it are finished.
    Returns the files in partition order.
    """
    from .codecs import codec_by_name

    if files < 1:
        raise UsageError(f"number of files must be at least 1, not {files}")
    if events_per_file < 1:
        raise UsageError(f"events per file must be at least 1, not {events_per_file}")
    if first_partition < 0 or gap_every < 0:
        raise UsageError("first partition and gap interval must not be negative")
    if jobs is not None and jobs < 1:
        raise UsageError(f"jobs must be at least 1, not {jobs}")
    codec_by_name(codec, level)
    partitions = partition_numbers(first_partition, files, gap_every)
    check_file_arguments(
        run=run,
        partition=partitions[-1],
        first_event=1,
        n_events=events_per_file,
        seed=seed,
        mean_event_kb=mean_event_kb,
    )
    outdir = _prepare_outdir(Path(outdir))
    paths = [outdir / file_name(run, p) for p in partitions]
    if not overwrite:
        _refuse_existing(paths)
    firsts = first_events(seed, run, partitions, events_per_file)
    cores = usable_cores()
    jobs = min(jobs or cores, files)
    threads = max(1, cores // jobs)
    specs = [
        FileJob(
            str(path),
            run,
            p,
            firsts[p],
            events_per_file,
            seed,
            mean_event_kb,
            codec,
            level,
            threads,
            overwrite,
            fsync,
        )
        for path, p in zip(paths, partitions, strict=True)
    ]
    done: list[GeneratedFile] = []
    if jobs == 1:
        for spec in specs:
            done.append(_run_job(spec))
            if progress:
                progress(done[-1])
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("fork")) as pool:
            futures = [pool.submit(_run_job, spec) for spec in specs]
            position = {future: index for index, future in enumerate(futures)}
            waiting: dict[int, GeneratedFile] = {}  # finished before an earlier partition
            shown = 0
            try:
                for future in as_completed(futures):
                    done.append(future.result())
                    waiting[position[future]] = done[-1]
                    while shown in waiting:
                        item = waiting.pop(shown)
                        shown += 1
                        if progress:
                            progress(item)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    return sorted(done, key=lambda f: f.partition)


def _prepare_outdir(outdir: Path) -> Path:
    if outdir.exists() and not outdir.is_dir():
        raise UsageError("output folder is not a directory", path=outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder: {os_reason(exc)}", path=outdir) from exc
    return outdir


def _refuse_existing(paths: list[Path]) -> None:
    existing = [p for p in paths if p.exists() or sidecar_path(p).exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputExists(f"output exists{more}; use overwrite=True to replace", path=existing[0])
