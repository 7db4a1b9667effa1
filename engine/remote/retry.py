"""Timeouts, retries with backoff, and the one-line errors a remote failure becomes.

Protocol modules raise ``RemoteFailure`` with a ``kind``: ``missing`` (no such file),
``denied`` (permission), ``transient`` (connection refused or dropped, timeout, server busy:
worth another try) or ``failed`` (anything else the server refused).  ``retrying`` runs one
step again after a transient failure, waiting longer each time, and turns what is left into
an ``InputError`` (exit 3) for a read or an ``OutputError`` (exit 7) for a write, naming the
URL.  The knobs are environment variables so a job's wrapper can set them for every command:
``TMBMERGE_REMOTE_TIMEOUT`` (seconds per request, default 60) and ``TMBMERGE_REMOTE_RETRIES``
(tries after the first, default 3; backoff 1, 2, 4 ... s, at most 30).
"""

from __future__ import annotations

import os
import time

from ..errors import InputError, InputNotFound, OutputError

TRANSIENT, MISSING, DENIED, FAILED = "transient", "missing", "denied", "failed"


class RemoteFailure(Exception):
    """One protocol step failed; ``kind`` says whether trying again can help."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


def timeout() -> int:
    """Seconds a remote request may take: ``$TMBMERGE_REMOTE_TIMEOUT``, default 60."""
    return max(1, int(float(os.environ.get("TMBMERGE_REMOTE_TIMEOUT", "60"))))


def retries() -> int:
    """Retries of a failed remote request: ``$TMBMERGE_REMOTE_RETRIES``, default 3."""
    return max(0, int(os.environ.get("TMBMERGE_REMOTE_RETRIES", "3")))


def backoff(attempt: int) -> float:
    """Seconds before retry ``attempt``: doubling from ``$TMBMERGE_REMOTE_BACKOFF``, at most 30."""
    return min(30.0, float(os.environ.get("TMBMERGE_REMOTE_BACKOFF", "1")) * 2**attempt)


def retrying(step, url, what: str, *, output: bool = False, tries: int | None = None):
    """``step()``, again after each transient failure (with backoff), else a one-line error."""
    tries = retries() if tries is None else tries
    attempt = 0
    while True:
        try:
            return step()
        except RemoteFailure as failure:
            if failure.kind == TRANSIENT and attempt < tries:
                time.sleep(backoff(attempt))
                attempt += 1
                continue
            raise as_engine_error(failure, url, what, output=output, attempts=attempt + 1) from None


def as_engine_error(
    failure: RemoteFailure, url, what: str, *, output: bool = False, attempts: int = 1
):
    """The user-facing error for a failed step: input (3) or output (7), naming the URL."""
    text = f"{what}: {failure.message}"
    if failure.kind == TRANSIENT and attempts > 1:
        text += f" (gave up after {attempts} tries)"
    if output:
        return OutputError(text, path=str(url))
    if failure.kind == MISSING:
        return InputNotFound(text, path=str(url))
    return InputError(text, path=str(url))
