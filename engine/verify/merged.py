"""The post-merge dump verification: prove a merged file equals its inputs, from its own bytes.

Every block of the output was re-read from the file while it was being written, its digests
checked (and, in deep mode, decoded and every payload digest recomputed) by a
``readback.BlockReadback``, which kept each block's adler32 of the bytes it read.  Once the
file is finished, it is re-opened with the reader (header, metadata, index and trailer all
re-read and re-validated), its index's block table must describe exactly the blocks read back
(where each is, every header field, the number of its first event), the whole-file adler32 is
put together from the bytes read back and compared with the one computed while writing, and the
event list (run, event, length, payload digest, in order) must equal the
concatenation of the inputs' lists.  This is tmbmerge's ``dsdump``: the output is never
trusted because it was written, only because it was read back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..checksums import RunningAdler32, adler32_hex, digest_hex
from ..errors import ChecksumMismatch, EngineError, LayoutError, SizeMismatch
from ..format import BLOCK_COLUMNS
from ..readers import open_file
from ..writer import WriteResult
from .crosscheck import crosscheck_events
from .readback import BlocksReadBack


def verify_merged_output(
    path, *, expected_events, written: WriteResult, read_back: BlocksReadBack, name=None
) -> None:
    """See the module docstring.  ``written`` is what the writer wrote (size, adler32),
    ``read_back`` what the ``BlockReadback`` read of every block as it was written.  Errors name
    the file ``name`` (the output as the user asked for it; default: ``path``, where it is
    read)."""
    path = Path(path)
    shown = Path(name) if name is not None else path
    try:
        with open_file(path) as reader:
            if reader.file_size != written.file_size:
                raise SizeMismatch(
                    "merged file's size differs from what was written",
                    path=shown,
                    expected=written.file_size,
                    actual=reader.file_size,
                )
            if (
                read_back.block_count != reader.block_count
                or read_back.adler32.size != reader.index_offset - reader.data_start
            ):
                raise SizeMismatch(
                    "the blocks read back are not the blocks of the file",
                    path=shown,
                    expected=reader.block_count,
                    actual=read_back.block_count,
                )
            _compare_block_tables(shown, reader.blocks, read_back.table)
            adler = RunningAdler32()
            adler.update(reader.head_bytes)
            adler.append(read_back.adler32.value, read_back.adler32.size)
            reader.feed_tail(adler)
            if adler.value != written.adler32:
                raise ChecksumMismatch(
                    "adler32 read back differs from the one computed while writing",
                    path=shown,
                    expected=adler32_hex(written.adler32),
                    actual=adler32_hex(adler.value),
                )
            crosscheck_events(shown, reader, expected_events)
    except EngineError as exc:
        if exc.path == str(path):  # the reader names the temporary file it opened
            exc.path = None
        exc.with_path(shown)
        raise


def _compare_block_tables(path: Path, indexed: np.ndarray, read_back: np.ndarray) -> None:
    """The index's block table must describe exactly the blocks read back from the file."""
    for name in BLOCK_COLUMNS:
        differs = np.flatnonzero(indexed[name] != read_back[name])
        if len(differs):
            i = int(differs[0])
            show = digest_hex if name.endswith("digest") else str
            raise LayoutError(
                f"the index's entry for block {i} disagrees with the block read back ({name})",
                path=path,
                region="index",
                expected=show(int(read_back[name][i])),
                actual=show(int(indexed[name][i])),
            )
