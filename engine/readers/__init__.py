"""Format readers, chosen by the magic bytes at the start of a file.

A reader is a class that implements ``Reader`` (below): the header and metadata, the index as
numpy arrays, ``iter_blocks()`` (stored bytes, checked without decompression: the merge fast
path), ``check_blocks()`` (verification), ``iter_events()`` (decoded, proven events) and a
lifetime (``release``, ``close``, a context manager).  ``READERS`` lists them; ``detect(path)``
returns the reader class whose magic bytes start a file and ``open_file(path)`` an open reader.
Every reader passes the shared contract suite ``tests/reader_contract.py``.

Readers are an explicit table, not entry points like catalogue backends: a reader is a file
format the engine itself writes, checks and documents (``docs/FORMAT.md``), not a site's
choice, and ``open_file`` runs at the start of nearly every command, where scanning installed
packages' metadata would cost more than the open.  Adding a format is a module here and a row.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from ..errors import ChecksumMismatch, NotATmbFile, TruncatedFile, input_error
from ..source import check_regular_file
from .tmb import TmbReader

PROBE_BYTES = 64  # a whole TMB header: enough to tell a damaged magic from a foreign file


@runtime_checkable
class Reader(Protocol):
    """What every reader offers (``TmbReader`` is the model); errors are ``EngineError``s naming
    the file, the region and the offset.

    Opening (the constructor, given a path or URL) reads and checks everything but the blocks
    (a damaged or truncated file is refused there); the streaming methods read blocks in file
    order and check each one; ``release()`` closes the file but keeps what was read (the next
    read reopens it, refusing a changed file); ``close()`` ends the reader."""

    #: The file's first bytes; ``SIGNATURE``, a prefix of them, is enough to recognise the format.
    MAGIC: ClassVar[bytes]
    SIGNATURE: ClassVar[bytes]
    #: The format's short name (``tmb``), for messages.
    FORMAT: ClassVar[str]

    path: Any
    file_size: int

    def __init__(self, path: Any) -> None:
        """Open ``path`` (a local path, a URL or a ``RemotePath``) and check all but the blocks."""
        ...

    metadata: dict
    #: First byte of the first block, and of the index: the blocks fill the bytes between.
    data_start: int

    @property
    def uuid(self) -> Any:
        """The file's UUID (``uuid.UUID``)."""
        ...

    @property
    def identity(self) -> Any:
        """What the file was when first opened (a changed file is refused on reopening)."""
        ...

    @property
    def event_count(self) -> int:
        """Events in the file."""
        ...

    @property
    def block_count(self) -> int:
        """Blocks in the file."""
        ...

    @property
    def index_offset(self) -> int:
        """File offset of the index."""
        ...

    @property
    def blocks(self) -> np.ndarray:
        """The block table (``format.BLOCK_DTYPE``): where each block is and what it holds."""
        ...

    @property
    def events(self) -> Any:
        """The whole event table (``format.EventTable``)."""
        ...

    @property
    def head_bytes(self) -> bytes:
        """The bytes before the first block, exactly as stored."""
        ...

    def event_slice(self, start: int, stop: int) -> Any:
        """Events ``start`` to ``stop`` (exclusive) of the event table."""
        ...

    def iter_event_chunks(self, chunk: int = ...) -> Iterator[Any]:
        """The event table in slices, in order."""
        ...

    def feed_tail(self, adler: Any, piece: int = ...) -> None:
        """Feed the bytes after the last block to a running adler32."""
        ...

    def read_block(self, number: int) -> Any:
        """One block, read and checked without decompression."""
        ...

    def iter_blocks(self, adler: Any = None, *, pool: Any = None) -> Iterator[Any]:
        """Every block in file order, checked without decompression."""
        ...

    def check_blocks(self, adler: Any = None, *, threads: int = 2) -> Iterator[Any]:
        """Check every block without keeping its bytes; each block's header, in file order."""
        ...

    def decode(self, block: Any) -> Any:
        """Decompress a block and prove its events against the index."""
        ...

    def iter_events(self) -> Iterator[Any]:
        """Every event, decoded and checked: (run, event, payload)."""
        ...

    def release(self) -> None:
        """Close the file, keeping what was read."""
        ...

    def close(self) -> None:
        """Close the file for good."""
        ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...


#: The readers, tried in order on a file's first bytes.
READERS: tuple[type[Reader], ...] = (TmbReader,)


def read_probe(path) -> bytes:
    """The first bytes of ``path``, with unreadable paths turned into one-line input errors."""
    from ..remote import is_url

    if is_url(path):
        from ..source import open_source

        source = open_source(path)
        try:
            return source.pread(min(PROBE_BYTES, source.size), 0)
        finally:
            source.close()
    check_regular_file(path)
    try:
        with open(path, "rb") as f:
            return f.read(PROBE_BYTES)
    except OSError as exc:
        raise input_error(exc, path) from None


def detect(path) -> type[Reader]:
    """The reader class whose magic bytes start the file."""
    probe = read_probe(path)
    for reader in READERS:
        # the signature suffices: the rest of a damaged magic is the reader's to report (integrity)
        if probe.startswith(reader.SIGNATURE):
            return reader
    if not probe:
        raise TruncatedFile("file is empty (0 bytes)", path=path, region="header", offset=0)
    from ..format import HEADER_MAGIC, header_with_damaged_magic

    if header_with_damaged_magic(probe):
        raise ChecksumMismatch(
            "damaged file magic (the header's digest proves a TMB header)",
            path=path,
            region="header",
            offset=0,
            expected=HEADER_MAGIC.hex(),
            actual=probe[:8].hex(),
        )
    for reader in READERS:
        if len(probe) < len(reader.MAGIC) and reader.MAGIC.startswith(probe):
            raise TruncatedFile(
                f"file is {len(probe)} bytes, cut inside the {reader.FORMAT} header",
                path=path,
                region="header",
                offset=0,
            )
    raise NotATmbFile("not a TMB file (unknown magic bytes)", path=path, region="header", offset=0)


def open_file(path) -> Reader:
    """Open ``path`` with the reader its magic bytes call for."""
    return detect(path)(path)


__all__ = [
    "READERS",
    "Reader",
    "check_regular_file",
    "detect",
    "open_file",
    "read_probe",
]
