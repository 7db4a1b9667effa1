"""The post-merge dump verification: prove a merged file equals its inputs, from its own bytes.

Every block of the output was re-read from the file while it was being written, its digests
checked (and, in deep mode, decoded and every payload digest recomputed) by a
``readback.BlockReadback``, which kept each block's adler32 of the bytes it read.  Once the
file is finished, it is re-opened with the reader (header, metadata, index and trailer all
re-read and re-validated), the whole-file adler32 is put together from those bytes read back
and compared with the one computed while writing, the blocks read back must be exactly the
file's, and the event list (run, event, length, payload digest, in order) must equal the
concatenation of the inputs' lists.  This is tmbmerge's ``dsdump``: the output is never
trusted because it was written, only because it was read back.
"""

from __future__ import annotations

from pathlib import Path

from ..checksums import RunningAdler32, adler32_hex
from ..errors import ChecksumMismatch, EngineError
from ..readers import open_file
from .crosscheck import crosscheck_events


def verify_merged_output(path, *, expected_events, expected_adler32: int, expected_size: int,
                         blocks_read_back) -> None:
    """See the module docstring; ``blocks_read_back`` is the ``BlockReadback`` that read every
    block of this file back as it was written (closed, without error)."""
    path = Path(path)
    try:
        with open_file(path) as reader:
            if reader.file_size != expected_size:
                raise ChecksumMismatch("merged file's size differs from what was written", path=path,
                                       expected=expected_size, actual=reader.file_size)
            if blocks_read_back.blocks_checked != reader.block_count or \
                    blocks_read_back.blocks_adler.size != reader.index_offset - reader.data_start:
                raise ChecksumMismatch("the blocks read back are not the blocks of the file", path=path,
                                       expected=reader.block_count, actual=blocks_read_back.blocks_checked)
            adler = RunningAdler32()
            adler.update(reader.head_bytes)
            adler.append(blocks_read_back.blocks_adler.value, blocks_read_back.blocks_adler.size)
            adler.update(reader.tail_bytes)
            if adler.value != expected_adler32:
                raise ChecksumMismatch("adler32 read back differs from the one computed while writing",
                                       path=path, expected=adler32_hex(expected_adler32),
                                       actual=adler32_hex(adler.value))
            crosscheck_events(path, reader.events, expected_events)
    except EngineError as exc:
        raise exc.with_path(path)
