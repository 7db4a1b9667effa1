"""The post-merge dump verification: prove a merged file equals its inputs, from its own bytes.

The finished output is re-opened with the reader (header, trailer, index all re-validated),
every block is re-read from the file and its digests checked, the whole-file adler32 is
recomputed from the bytes read back and compared with the one computed while writing, and the
event list (run, event, length, payload digest, in order) must equal the concatenation of the
inputs' lists.  In deep mode every block is also decompressed and every payload digest
recomputed (on all cores); a merge in deep mode has done that, and the re-reading of the blocks,
as it wrote them (``readback.BlockReadback``), and hands over the per-block checksums of what it
read back instead of reading every block a second time.  This is tmbmerge's ``dsdump``: the
output is never trusted because it was written, only because it was read back.
"""

from __future__ import annotations

from pathlib import Path

from ..checksums import RunningAdler32, adler32_hex
from ..errors import ChecksumMismatch, EngineError
from ..pool import bounded_map
from ..readers import open_file
from .crosscheck import crosscheck_events


def verify_merged_output(path, *, expected_events, expected_adler32: int, expected_size: int,
                         deep: bool = False, threads: int = 1, progress=None, blocks_read_back=None) -> None:
    """See the module docstring.  ``blocks_read_back`` (a ``BlockReadback``, deep mode) already read
    every block back from this file, checked and decoded it: its per-block checksums stand for
    a second read of the blocks; header, metadata, index and trailer are re-read all the same."""
    path = Path(path)
    try:
        with open_file(path) as reader:
            if reader.file_size != expected_size:
                raise ChecksumMismatch("merged file's size differs from what was written", path=path,
                                       expected=expected_size, actual=reader.file_size)
            adler = RunningAdler32()
            if blocks_read_back is not None:
                if blocks_read_back.blocks_checked != reader.block_count or \
                        blocks_read_back.blocks_adler.size != reader.index_offset - reader.data_start:
                    raise ChecksumMismatch("the blocks read back are not the blocks of the file", path=path,
                                           expected=reader.block_count, actual=blocks_read_back.blocks_checked)
                adler.update(reader.head_bytes)
                adler.append(blocks_read_back.blocks_adler.value, blocks_read_back.blocks_adler.size)
                adler.update(reader.tail_bytes)
            elif deep:
                for decoded in bounded_map(reader.decode, reader.iter_blocks(adler), threads=threads):
                    if progress is not None:
                        progress.advance(bytes=len(decoded.records))
            else:
                for header in reader.check_blocks(adler, threads=max(threads, 2)):
                    if progress is not None:
                        progress.advance(bytes=header.compressed_length)
            if adler.value != expected_adler32:
                raise ChecksumMismatch("adler32 read back differs from the one computed while writing",
                                       path=path, expected=adler32_hex(expected_adler32),
                                       actual=adler32_hex(adler.value))
            crosscheck_events(path, reader.events, expected_events)
    except EngineError as exc:
        raise exc.with_path(path)
