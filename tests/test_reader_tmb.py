"""``TmbReader`` passes the reader contract (``tests/reader_contract.py``): local files of either
codec, and files served by xrootd (``root://`` and ``https://``), read through the remote block
source."""

from __future__ import annotations

import threading

import pytest
from reader_contract import ReaderContract, Sample

from engine.readers.tmb import TmbReader
from engine.writer import TmbWriter

BLOCK_BYTES = 2048  # ~6 blocks for the contract's 30 events


def write_tmb(path, events, codec: str = "zstd") -> None:
    """A TMB file of ``events`` (run, event, payload) in small blocks, without fsync."""
    with TmbWriter(path, codec=codec, block_bytes=BLOCK_BYTES, fsync=False) as writer:
        for run, event, payload in events:
            writer.write_event(run, event, payload)


class TestTmbReader(ReaderContract):
    reader_class = TmbReader

    @pytest.fixture
    def sample(self, tmp_path):
        def make(events, name):
            path = tmp_path / f"{name}.tmb"
            write_tmb(path, events)
            return Sample(path, path)

        return make


class TestTmbReaderUncompressed(TestTmbReader):
    @pytest.fixture
    def sample(self, tmp_path):
        def make(events, name):
            path = tmp_path / f"{name}.tmb"
            write_tmb(path, events, codec="none")
            return Sample(path, path)

        return make


class TestTmbReaderOverXRootD(ReaderContract):
    reader_class = TmbReader
    scheme = "root"

    def fail_reads(self, monkeypatch, file, data_start):
        """The protocol's range reads past ``data_start`` fail as the server's I/O error would."""
        from engine.remote import https, xrootd
        from engine.remote.retry import FAILED, RemoteFailure, retrying

        def failing(real):
            def read(self, offset, length):
                if offset < data_start:
                    return real(self, offset, length)

                def step():
                    raise RemoteFailure(FAILED, "Input/output error")

                return retrying(step, self.rp, f"read error at offset {offset}")

            return read

        for reader in (xrootd.XRootDReader, https.HttpsReader):
            monkeypatch.setattr(reader, "read", failing(reader.read))

    def handles(self, file):
        """A remote file holds no local descriptor: count the threads fetching its ranges."""
        return sum(t.name.startswith("tmb-fetch") for t in threading.enumerate())

    @pytest.fixture
    def sample(self, remote_env, tmp_path, request):
        folder = f"contract-{request.node.name}"[:60].replace("[", "-").replace("]", "")

        def make(events, name):
            local = tmp_path / f"{name}.tmb"
            write_tmb(local, events)
            served = remote_env.put(local, folder)
            server = remote_env.root_url if self.scheme == "root" else remote_env.https_url
            return Sample(served, f"{server}/{folder}/{local.name}")

        return make


class TestTmbReaderOverHttps(TestTmbReaderOverXRootD):
    scheme = "https"
