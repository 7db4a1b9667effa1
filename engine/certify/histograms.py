"""Per-run histograms of the standard quantities: filling them from files, and their kept form.

``fill_files(paths)`` reads every block of every file through the reader (so every digest is
checked on the way: a certification never histograms unchecked bytes), decodes it and fills
one boost-histogram per quantity (integer storage: counts compare exactly).  ``RunHistograms``
is what one (run, sample) filled: the histograms, the files and events that went in and how
many payloads were malformed; ``to_record``/``from_record`` are its plain-JSON form
(binning plus counts with under- and overflow), which the campaign service keeps in its
catalogue database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import boost_histogram as bh
import numpy as np

from ..errors import InconsistentInputs
from .quantities import BY_NAME, QUANTITIES, Quantity, block_quantities


def new_histogram(quantity: Quantity) -> bh.Histogram:
    """An empty histogram of ``quantity``'s binning."""
    axis: bh.axis.Axis
    if quantity.kind == "integer":
        axis = bh.axis.Integer(int(quantity.start), int(quantity.stop))
    else:
        axis = bh.axis.Regular(quantity.bins, quantity.start, quantity.stop)
    return bh.Histogram(axis, storage=bh.storage.Int64())


@dataclass
class RunHistograms:
    """The histograms of one run's sample (``unmerged`` or ``merged`` files)."""

    run: int
    sample: str
    histograms: dict[str, bh.Histogram] = field(
        default_factory=lambda: {q.name: new_histogram(q) for q in QUANTITIES}
    )
    files: list[str] = field(default_factory=list)
    events: int = 0
    malformed: int = 0

    def counts(self, name: str) -> np.ndarray:
        """Bin counts with under- and overflow."""
        return self.histograms[name].values(flow=True)

    def to_record(self) -> dict:
        """The histograms as the record the campaign service stores."""
        return {
            "run": self.run,
            "sample": self.sample,
            "files": list(self.files),
            "events": self.events,
            "malformed": self.malformed,
            "histograms": {
                name: {
                    "binning": BY_NAME[name].binning(),
                    "counts": [int(c) for c in h.values(flow=True)],
                }
                for name, h in self.histograms.items()
            },
        }

    @classmethod
    def from_record(cls, record: dict) -> RunHistograms:
        """Rebuild from ``to_record``'s form; a quantity kept with another binning is left out."""
        filled = cls(
            int(record["run"]),
            record["sample"],
            histograms={},
            files=list(record["files"]),
            events=int(record["events"]),
            malformed=int(record["malformed"]),
        )
        for name, kept in record["histograms"].items():
            quantity = BY_NAME.get(name)
            if quantity is None or kept["binning"] != quantity.binning():
                continue
            h = new_histogram(quantity)
            view = h.view(flow=True)
            view[...] = np.asarray(kept["counts"], dtype=np.int64)
            filled.histograms[name] = h
        return filled


def fill_files(paths, *, run: int, sample: str) -> RunHistograms:
    """Histogram every event of ``paths`` (all of run ``run``) into a new ``RunHistograms``."""
    from ..readers import open_file

    filled = RunHistograms(run, sample)
    for path in paths:
        with open_file(path) as reader:
            for block in reader.iter_blocks():
                decoded = reader.decode(block)
                if np.any(decoded.events.run != run):
                    other = int(decoded.events.run[np.argmax(decoded.events.run != run)])
                    raise InconsistentInputs(
                        f"holds events of run {other}, not only run {run}",
                        path=path,
                        region=f"block {block.number}",
                        offset=block.offset,
                    )
                found = block_quantities(
                    decoded.records, decoded.payload_offsets, decoded.events.length
                )
                for name, values in found.values.items():
                    filled.histograms[name].fill(values)
                filled.events += found.events
                filled.malformed += found.malformed
        filled.files.append(Path(path).name)
    return filled
