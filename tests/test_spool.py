"""``spool.EventSpool``: event columns given back in order whatever goes to its file, even when
the system writes only part of a gathered write each time."""

from __future__ import annotations

import os

import numpy as np
import pytest

import engine.spool as spool
from engine.format import EVENT_COLUMNS, EventTable


def _tables(rng, count):
    tables, first = [], 0
    for _ in range(count):
        n = int(rng.integers(0, 9))
        tables.append(
            EventTable(
                np.arange(first, first + n, dtype=np.uint64),
                rng.integers(0, 2**63, n).astype(np.uint64),
                np.full(n, 7, dtype=np.uint32),
                rng.integers(0, 1000, n).astype(np.uint32),
                np.full(n, len(tables), dtype=np.uint32),
            )
        )
        first += n
    return tables


@pytest.mark.parametrize("most", [None, 1, 5, 13])
def test_spool_gives_columns_back_in_order(monkeypatch, tmp_path, most):
    """``most``: at most this many bytes per writev (short writes), None: the system's."""
    if most is not None:
        real = os.writev

        def short_writev(fd, buffers):
            joined = b"".join(bytes(b) for b in buffers)[:most]
            return real(fd, [joined]) if joined else 0

        monkeypatch.setattr(spool.os, "writev", short_writev)
    monkeypatch.setattr(spool, "_GATHER", 3)
    rng = np.random.default_rng(most or 0)
    tables = _tables(rng, 40)
    events = spool.EventSpool(memory_events=10, directory=tmp_path)
    for table in tables:
        events.append(table)
    try:
        for column, (_, dtype) in enumerate(EVENT_COLUMNS):
            got = np.concatenate([np.asarray(p, dtype=dtype) for p in events.column(column)])
            want = np.concatenate([t.columns()[column] for t in tables])
            assert got.dtype == np.dtype(dtype) and np.array_equal(got, want), column
    finally:
        events.close()
