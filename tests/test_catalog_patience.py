"""Issues 10 and 15: how long tmbmerge waits for a SAM web server, against the tests' real local
server (tests/samweb_server.py) made to refuse, hang or answer 503, through the command line.

A host that does not resolve, or where nothing listens, is a wrong URL: reported at once, in
one whole line.  A server that takes a request and never answers costs one read timeout per
attempt; 5xx answers and timeouts are retried with backoff until the total deadline
(``--catalog-deadline``, ``TMBMERGE_CATALOG_DEADLINE``), shrunk here to a few seconds.
"""

from __future__ import annotations

import socket

import pytest
from samweb_server import SamWebServer

NAME = "tmb_0000178000_p000.tmb"


@pytest.fixture(autouse=True)
def short_timeouts(monkeypatch):
    for name in ("TMBMERGE_CATALOG_DEADLINE", "TMBMERGE_SAMWEB_RETRIES", "X509_USER_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TMBMERGE_SAMWEB_TIMEOUT", "1,1")


@pytest.fixture
def server():
    with SamWebServer("dzero") as running:
        yield running


def one_line(text: str) -> str:
    [line] = text.strip().splitlines()
    assert line.startswith("tmbmerge: error: ") and "Traceback" not in text
    return line


def test_nothing_listening_fails_at_once_with_a_whole_message(cli):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"samweb+http://127.0.0.1:{port}/sam/dzero/api"
    result = cli("catalog", "show", NAME, "--catalog", url, "--catalog-deadline", "60")
    assert result.code == 8
    line = one_line(result.err)
    assert f"samweb server http://127.0.0.1:{port}/sam/dzero/api: GET " in line
    assert "failed once in " in line and "not retried" in line
    assert line.endswith("last: ConnectionError: Connection refused")


def test_a_name_that_does_not_resolve_fails_at_once(cli):
    url = "samweb+http://no-such-sam-host.invalid/sam/dzero/api"
    result = cli("catalog", "show", NAME, "--catalog", url, "--catalog-deadline", "60")
    assert result.code == 8
    line = one_line(result.err)
    assert "samweb server http://no-such-sam-host.invalid/sam/dzero/api" in line
    assert "failed once" in line and "not retried" in line and "last: ConnectionError: " in line


def test_a_hung_server_costs_one_read_timeout_per_attempt_until_the_deadline(cli, server):
    server.hang_next(1000)
    result = cli("catalog", "show", NAME, "--catalog", server.url, "--catalog-deadline", "3")
    assert result.code == 8
    line = one_line(result.err)
    assert (
        f"samweb server {server.base}: GET /files/name/{NAME}/metadata failed 2 times in " in line
    )
    assert "no time left for another try before the catalogue deadline of 3 s" in line
    assert "last: ConnectionError: ReadTimeoutError: Read timed out. (read timeout=1.0)" in line
    # tried again at once; a third try would come after 2 s of backoff, past the deadline
    assert len(server.requests) == 2


def test_503s_are_retried_with_backoff_until_the_deadline(cli, server):
    server.fail_next(1000, status=503)
    result = cli("catalog", "show", NAME, "--catalog", server.url, "--catalog-deadline", "3")
    assert result.code == 8
    line = one_line(result.err)
    assert "before the catalogue deadline of 3 s" in line and "last: HTTP 503" in line
    # at once, again at once, then after 2 s of backoff; 4 s more would pass the deadline
    assert "failed 3 times in " in line and len(server.requests) == 3


def test_a_server_back_within_the_deadline_is_waited_for(cli, server):
    server.put({"file_name": NAME, "file_size": 12, "data_tier": "unmerged-thumbnail"})
    server.hang_next(1)
    result = cli("catalog", "show", NAME, "--catalog", server.url, "--catalog-deadline", "30")
    assert result.code == 0, result.err
    assert NAME in result.out and len(server.requests) == 2


def test_the_deadline_comes_from_the_environment_too(cli, server, monkeypatch):
    monkeypatch.setenv("TMBMERGE_CATALOG_DEADLINE", "2")
    server.fail_next(1000, status=502)
    result = cli("catalog", "show", NAME, "--catalog", server.url)
    assert result.code == 8
    assert "before the catalogue deadline of 2 s" in one_line(result.err)


def test_a_bad_deadline_is_a_usage_error(cli, server):
    result = cli("catalog", "show", NAME, "--catalog", server.url, "--catalog-deadline", "0")
    assert result.code == 2 and "--catalog-deadline" in result.err
