"""The behaviour every reader must have (``engine.readers.Reader``), written once.

Subclass ``ReaderContract`` in a reader's test module (as ``tests/catalog_contract.py`` serves
catalogues, the zarr ``StoreTests`` pattern) and give it a ``sample`` fixture: a function
``sample(events, name)`` that writes a file of the reader's format holding ``events`` (a list of
``(run, event, payload)``) in several blocks and returns a ``Sample``: the local path whose bytes
a test may damage, and the name to open it by (the same path, or a URL that serves it).  The
class name does not start with ``Test`` so pytest collects only the subclasses.

What every reader must do: be chosen by its magic bytes (a foreign file is no reader's); give
back exactly the events written, in order, block by block, with a block table that says where
each block is; refuse a truncated file and any single flipped bit with an ``EngineError`` of
exit code 5 naming the file (a one-line message, no other exception); report a failing read as
an input error (exit 3) naming the file and the block; and release the file when
closed, or released (reading again then reopens it, refusing a file that changed meanwhile).
"""

from __future__ import annotations

import errno
import os
import zlib
from pathlib import Path
from typing import NamedTuple

import pytest

from engine.checksums import RunningAdler32, xxh3_64
from engine.errors import EngineError, InputError, IntegrityError, NotATmbFile
from engine.readers import READERS, Reader, detect, open_file

#: Events of a sample: 30 events of 0 to ~600 bytes, one run, numbers with gaps.
EVENTS = [
    (178000, 1000 + 3 * i, bytes((i * 7 + k) % 251 for k in range(i * 20))) for i in range(30)
]


class Sample(NamedTuple):
    """A sample file: ``path`` holds its bytes on this machine, ``name`` is what a reader opens."""

    path: Path
    name: object


def open_descriptors(path: Path) -> int:
    """How many of this process's file descriptors are open on ``path``."""
    target = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == target
        except OSError:
            pass  # closed meanwhile (the listing's own descriptor)
    return count


def assert_events_read_back(reader, events) -> None:
    """``reader`` gives back exactly ``events`` (run, event, payload), decoded and in its index."""
    decoded = [(ev.run, ev.event, bytes(ev.payload)) for ev in reader.iter_events()]
    assert decoded == events

    table = reader.events
    assert table.run.tolist() == [r for r, _, _ in events]
    assert table.event.tolist() == [e for _, e, _ in events]
    assert table.length.tolist() == [len(p) for _, _, p in events]
    assert table.digest.tolist() == [xxh3_64(p) for _, _, p in events]
    assert reader.event_count == len(events)


def read_everything(name) -> None:
    """Open, check every block, decode every event: all a reader checks."""
    with open_file(name) as reader:
        for _ in reader.check_blocks(RunningAdler32()):
            pass
        for _ in reader.iter_events():
            pass


class ReaderContract:
    """Opening by magic, events, the block index, damage, and the file's lifetime."""

    #: The reader class under test.
    reader_class: type

    # -- opening by magic ------------------------------------------------------------------
    def test_is_a_registered_reader(self):
        assert self.reader_class in READERS
        assert self.reader_class.MAGIC.startswith(self.reader_class.SIGNATURE)
        assert self.reader_class.SIGNATURE and self.reader_class.FORMAT

    def test_opened_by_its_magic_bytes(self, sample):
        file = sample(EVENTS, "magic")
        assert file.path.read_bytes().startswith(self.reader_class.MAGIC)
        assert detect(file.name) is self.reader_class
        with open_file(file.name) as reader:
            assert isinstance(reader, self.reader_class)
            assert isinstance(reader, Reader)
            assert reader.file_size == file.path.stat().st_size

    def test_a_foreign_file_is_no_readers(self, sample):
        file = sample(EVENTS, "foreign")
        file.path.write_bytes(b"#!/bin/sh\necho this is no event file\n" * 4)
        with pytest.raises(NotATmbFile) as caught:
            open_file(file.name)
        assert caught.value.exit_code == 4 and str(file.name) in str(caught.value)

    # -- what it reads ---------------------------------------------------------------------
    def test_events_are_those_written_in_order(self, sample):
        file = sample(EVENTS, "events")
        with open_file(file.name) as reader:
            assert_events_read_back(reader, EVENTS)
            chunks = list(reader.iter_event_chunks(7))
            assert [n for c in chunks for n in c.event.tolist()] == reader.events.event.tolist()

    def test_the_block_index_says_where_each_block_is(self, sample):
        file = sample(EVENTS, "blocks")
        data = file.path.read_bytes()
        with open_file(file.name) as reader:
            blocks = reader.blocks
            assert reader.block_count == len(blocks) > 1
            assert int(blocks["offset"][0]) == reader.data_start
            assert int(blocks["event_count"].sum()) == reader.event_count
            adler = RunningAdler32()
            streamed = list(reader.iter_blocks(adler))
            assert adler.value == zlib.adler32(data) and adler.size == len(data)
            assert [b.number for b in streamed] == list(range(reader.block_count))
            first = 0
            for block, entry in zip(streamed, blocks, strict=True):
                assert block.offset == int(entry["offset"])
                assert bytes(block.stored) == data[block.offset : block.offset + block.size]
                assert block.header.event_count == int(entry["event_count"])
                assert block.events.event.tolist() == [
                    e for _, e, _ in EVENTS[first : first + block.header.event_count]
                ]
                first += block.header.event_count
                assert bytes(reader.read_block(block.number).stored) == bytes(block.stored)
            checked_adler = RunningAdler32()
            checked = list(reader.check_blocks(checked_adler, threads=2))
            assert checked == [b.header for b in streamed]
            assert checked_adler.value == adler.value

    # -- damage ----------------------------------------------------------------------------
    def test_a_truncated_file_is_refused_naming_it(self, sample):
        file = sample(EVENTS, "cut")
        data = file.path.read_bytes()
        for size in sorted(
            {0, 3, 40, 100, len(data) // 3, len(data) // 2, len(data) - 70, len(data) - 1}
        ):
            file.path.write_bytes(data[:size])
            with pytest.raises(EngineError) as caught:
                read_everything(file.name)
            error = caught.value
            assert isinstance(error, IntegrityError) and error.exit_code == 5, (size, repr(error))
            assert str(error).startswith(f"{file.name}: ") and "\n" not in str(error)

    def test_any_flipped_bit_is_refused_naming_the_region(self, sample):
        file = sample(EVENTS, "flip")
        data = file.path.read_bytes()
        # every region (header, metadata, block headers and bytes, index, trailer) is hit
        for at in sorted({*range(0, len(data), max(1, len(data) // 40)), len(data) - 1}):
            damaged = bytearray(data)
            damaged[at] ^= 1 << (at % 8)
            file.path.write_bytes(bytes(damaged))
            with pytest.raises(EngineError) as caught:
                read_everything(file.name)
            error = caught.value
            assert error.exit_code == 5, (at, repr(error))
            assert error.path == str(file.name) and error.region, (at, repr(error))
            assert "\n" not in str(error)

    # -- the world -------------------------------------------------------------------------
    def fail_reads(self, monkeypatch, file: Sample, data_start: int) -> None:
        """From now on, reading ``file`` at or past ``data_start`` fails with an I/O error (a
        remote reader's subclass fails its protocol's reads instead)."""
        target = os.path.realpath(file.path)
        real_pread, real_preadv = os.pread, os.preadv

        def ours(fd: int, offset: int) -> bool:
            return offset >= data_start and os.readlink(f"/proc/self/fd/{fd}") == target

        def pread(fd, length, offset):
            if ours(fd, offset):
                raise OSError(errno.EIO, "Input/output error")
            return real_pread(fd, length, offset)

        def preadv(fd, buffers, offset):
            if ours(fd, offset):
                raise OSError(errno.EIO, "Input/output error")
            return real_preadv(fd, buffers, offset)

        monkeypatch.setattr(os, "pread", pread)
        monkeypatch.setattr(os, "preadv", preadv)

    def test_a_read_error_is_an_input_error_at_the_block(self, sample):
        file = sample(EVENTS, "eio")
        for stream in ("iter_blocks", "check_blocks"):
            with open_file(file.name) as reader, pytest.MonkeyPatch.context() as patch:
                self.fail_reads(patch, file, reader.data_start)
                with pytest.raises(InputError) as caught:
                    list(getattr(reader, stream)())
            error = caught.value
            assert error.exit_code == 3 and error.path == str(file.name), (stream, repr(error))
            assert error.region and error.region.startswith("block "), (stream, repr(error))
            assert "Input/output error" in str(error) and "\n" not in str(error)

    # -- lifetime --------------------------------------------------------------------------
    def handles(self, file: Sample) -> int:
        """What a reader holds open on ``file``: descriptors of a local file (a remote reader's
        subclass counts what its source holds instead)."""
        return open_descriptors(file.path)

    def test_closing_releases_the_file(self, sample):
        file = sample(EVENTS, "close")
        before = self.handles(file)
        reader = open_file(file.name)
        blocks = reader.iter_blocks()
        next(blocks)  # reading: whatever streaming holds is held now
        assert self.handles(file) > before
        reader.close()
        assert self.handles(file) == before
        with pytest.raises(EngineError):
            list(reader.iter_blocks())
        with open_file(file.name) as reader:
            list(reader.iter_blocks())
        assert self.handles(file) == before
        with pytest.raises(EngineError), open_file(file.name) as reader:
            file.path.write_bytes(file.path.read_bytes()[:-1])  # truncated while open
            list(reader.check_blocks())
        assert self.handles(file) == before

    def test_released_then_read_again_or_refused_if_changed(self, sample):
        file = sample(EVENTS, "release")
        before = self.handles(file)
        with open_file(file.name) as reader:
            first = [bytes(b.stored) for b in reader.iter_blocks()]
            reader.release()
            assert self.handles(file) == before
            assert [bytes(b.stored) for b in reader.iter_blocks()] == first
            reader.release()
            file.path.write_bytes(file.path.read_bytes() + b"more")
            with pytest.raises(InputError) as caught:
                list(reader.iter_blocks())
            assert caught.value.exit_code == 3 and str(file.name) in str(caught.value)
