"""The standard certification quantities, and how to read them out of a block of TMB payloads.

A TMB event payload (``engine.generate`` writes the model; its dtypes are the layout) is a
32-byte header (magic, version, run, event, trigger mask, hit, track and cluster counts...),
then ``hits`` 8-byte hits, ``tracks`` 24-byte tracks, ``clusters`` 16-byte clusters, and a
1-8 byte trailer.  Certification compares histograms of what a physicist would look at first:
multiplicities, track parameters, cluster energies, hit ADC counts and times, fired trigger bits.

Strategy: everything is vectorized over a decoded block (a few hundred events, a few MiB):
the headers are gathered with one fancy index, their counts say where each section starts,
and each section's records are gathered the same way and viewed through their dtype.  An
event whose payload does not hold the layout its header announces (wrong magic, section sizes
that do not add up to its length) is counted as malformed and left out of every histogram but
the event size, so a damaged payload shows instead of crashing or skewing the plots.

Binnings are fixed (``QUANTITIES``), so histograms of different runs and of unmerged and
merged files are comparable bin by bin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..generate import CLUSTER, EVENT_HEADER, EVENT_MAGIC, HIT, TRACK

HEADER_BYTES = EVENT_HEADER.itemsize


@dataclass(frozen=True)
class Quantity:
    """One histogrammed quantity: a name (its key everywhere), an axis label and a binning."""

    name: str
    label: str
    kind: str  # "regular" (bins, start, stop) or "integer" (start, stop)
    bins: int
    start: float
    stop: float
    group: str  # "event", "track", "cluster", "hit"

    def binning(self) -> dict:
        """The quantity's binning as JSON-ready data."""
        return {"kind": self.kind, "bins": self.bins, "start": self.start, "stop": self.stop}


QUANTITIES: tuple[Quantity, ...] = (
    Quantity("event_kb", "event size [kB]", "regular", 60, 0.0, 60.0, "event"),
    Quantity("n_hits", "hits per event", "regular", 50, 0.0, 5000.0, "event"),
    Quantity("n_tracks", "tracks per event", "regular", 50, 0.0, 250.0, "event"),
    Quantity("n_clusters", "clusters per event", "regular", 50, 0.0, 400.0, "event"),
    Quantity("trigger_bit", "fired trigger bit", "integer", 32, 0, 32, "event"),
    Quantity("track_pt", "track pT [GeV]", "regular", 50, 0.0, 20.0, "track"),
    Quantity("track_eta", "track eta", "regular", 50, -2.5, 2.5, "track"),
    Quantity("track_phi", "track phi [rad]", "regular", 50, -np.pi, np.pi, "track"),
    Quantity("track_d0", "track d0 [cm]", "regular", 50, -0.1, 0.1, "track"),
    Quantity("track_z0", "track z0 [cm]", "regular", 50, -100.0, 100.0, "track"),
    Quantity("track_chi2", "track chi2/ndf", "regular", 50, 0.0, 5.0, "track"),
    Quantity("cluster_energy", "cluster energy [GeV]", "regular", 50, 0.0, 20.0, "cluster"),
    Quantity("cluster_eta", "cluster eta", "regular", 50, -2.5, 2.5, "cluster"),
    Quantity("hit_adc", "hit ADC counts", "regular", 64, 0.0, 256.0, "hit"),
    Quantity("hit_time", "hit time [ns]", "regular", 60, -60.0, 60.0, "hit"),
)
BY_NAME = {q.name: q for q in QUANTITIES}


def _exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts), dtype=np.int64)
    if len(counts) > 1:
        np.cumsum(counts[:-1], out=out[1:])
    return out


def gather_records(
    buf: np.ndarray, starts: np.ndarray, counts: np.ndarray, dtype: np.dtype
) -> np.ndarray:
    """``counts[i]`` consecutive records of ``dtype`` starting at byte ``starts[i]`` of ``buf``,
    all events in order."""
    counts = counts.astype(np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=dtype)
    within = np.arange(total, dtype=np.int64) - np.repeat(_exclusive_cumsum(counts), counts)
    first_byte = np.repeat(starts.astype(np.int64), counts) + within * dtype.itemsize
    raw = buf[first_byte[:, None] + np.arange(dtype.itemsize, dtype=np.int64)]
    return np.ascontiguousarray(raw).view(dtype).reshape(total)


@dataclass
class BlockQuantities:
    """The values of every quantity for one block's events (arrays, ready to fill)."""

    values: dict[str, np.ndarray]
    events: int
    malformed: int


def block_quantities(records, payload_offsets: np.ndarray, lengths: np.ndarray) -> BlockQuantities:
    """Read every quantity out of a decoded block (``records``: its uncompressed record bytes)."""
    buf = np.frombuffer(records, dtype=np.uint8)
    offsets = payload_offsets.astype(np.int64)
    lengths = lengths.astype(np.int64)
    values: dict[str, np.ndarray] = {"event_kb": lengths / 1000.0}
    long_enough = lengths >= HEADER_BYTES + 1
    header = gather_records(
        buf, offsets[long_enough], np.ones(int(long_enough.sum()), np.int64), EVENT_HEADER
    )
    hits, tracks = header["hits"].astype(np.int64), header["tracks"].astype(np.int64)
    clusters = header["clusters"].astype(np.int64)
    body = (
        HEADER_BYTES + hits * HIT.itemsize + tracks * TRACK.itemsize + clusters * CLUSTER.itemsize
    )
    trailer = lengths[long_enough] - body
    good = (header["magic"] == EVENT_MAGIC) & (trailer >= 1) & (trailer <= 8)
    header, hits, tracks, clusters = header[good], hits[good], tracks[good], clusters[good]
    starts = offsets[long_enough][good] + HEADER_BYTES
    values["n_hits"], values["n_tracks"], values["n_clusters"] = hits, tracks, clusters
    trigger = header["trigger"].astype(np.uint64)
    bits = (trigger[:, None] >> np.arange(32, dtype=np.uint64)) & np.uint64(1)
    values["trigger_bit"] = np.nonzero(bits)[1]
    hit = gather_records(buf, starts, hits, HIT)
    values["hit_adc"], values["hit_time"] = hit["adc"], hit["time"]
    starts = starts + hits * HIT.itemsize
    track = gather_records(buf, starts, tracks, TRACK)
    for field in ("pt", "eta", "phi", "d0", "z0", "chi2"):
        values[f"track_{field}"] = track[field]
    starts = starts + tracks * TRACK.itemsize
    cluster = gather_records(buf, starts, clusters, CLUSTER)
    values["cluster_energy"], values["cluster_eta"] = cluster["energy"], cluster["eta"]
    return BlockQuantities(values, len(lengths), len(lengths) - int(good.sum()))
