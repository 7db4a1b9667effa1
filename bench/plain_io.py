"""The plain-I/O baseline the benchmarks compare against: write bytes with os.write and fsync."""

import os

CHUNK = 4 << 20


def write_plain(path, data) -> None:
    """Write ``data`` (any buffer) in 4 MiB pieces with os.write, then fsync."""
    view = memoryview(data).cast("B")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for start in range(0, len(view), CHUNK):
            piece = view[start : start + CHUNK]
            while piece.nbytes:
                piece = piece[os.write(fd, piece) :]
        os.fsync(fd)
    finally:
        os.close(fd)
