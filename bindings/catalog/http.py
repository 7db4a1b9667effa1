"""HTTP transport shared by the web catalogue clients (SAM web, MetaCat): retries, timeouts, budget.

``HttpTransport.request`` does one API call through a ``requests`` session whose adapter
retries (urllib3 ``Retry``) connection failures, timeouts, dropped connections and 5xx answers
with exponential backoff (the first retry at once, then 2, 4, 8 ... s up to ``MAX_BACKOFF``,
``Retry-After`` honoured), every method included (a repeated declaration is answered 409 and
compared by the backend), never a 4xx (an answer: retrying cannot change it) nor a TLS failure
(configuration, not weather).  Each attempt counts in the catalogue's ``CatalogBudget``, and
no attempt starts, nor backoff sleeps, past its total deadline.  When retries or the deadline
run out, ``CatalogUnavailable`` names the attempts and the last failure.
"""

from __future__ import annotations

import time

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.util.retry import Retry

from engine import __version__
from engine.errors import CatalogError, CatalogUnavailable, UsageError

from .base import CatalogBudget

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_RETRIES = 10  # with the backoff below: about 5 minutes of trying before giving up
DEFAULT_BACKOFF = 1.0  # seconds before the 2nd retry, doubling each time
MAX_BACKOFF = 60.0


class BudgetedRetry(Retry):
    """urllib3's ``Retry``, counting every attempt in a ``CatalogBudget`` and stopping at its
    deadline."""

    budget: CatalogBudget | None = None

    def new(self, **kw) -> BudgetedRetry:
        retry = super().new(**kw)
        retry.budget = self.budget
        return retry

    def get_backoff_time(self) -> float:
        backoff = super().get_backoff_time()
        return backoff if self.budget is None else max(0.0, min(backoff, self.budget.remaining()))

    def increment(
        self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None
    ):
        if self.budget is not None:
            self.budget.spend(0.0)  # the attempt that just failed; its time is counted by request()
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        if self.budget is not None and self.budget.remaining() <= 0:
            raise MaxRetryError(
                _pool, url, error or ResponseError("the catalogue deadline is spent")
            )
        return retry


class HttpTransport:
    """One catalogue's HTTP session: ``request(method, path)`` against ``base`` (see the module
    docstring)."""

    def __init__(
        self,
        base: str,
        budget: CatalogBudget,
        *,
        name: str,
        headers: dict | None = None,
        cert=None,
        verify: bool | str = True,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        url: str | None = None,
    ) -> None:
        if retries < 0:
            raise UsageError(f"retries must be 0 or more, not {retries}")
        self.base = base.rstrip("/")
        self.budget = budget
        self.name = name  # "samweb", "metacat": how errors start
        self.url = url or base
        self.timeout = (connect_timeout, read_timeout)
        self.retries = retries
        retry = BudgetedRetry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            redirect=0,
            other=0,  # TLS failures: configuration, not weather
            allowed_methods=None,  # POST too: the backends make a repeated declaration harmless
            status_forcelist=range(500, 600),
            backoff_factor=backoff,
            backoff_max=MAX_BACKOFF,
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        retry.budget = budget
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers["User-Agent"] = f"tmbmerge/{__version__}"
        self.session.headers["Accept"] = "application/json"
        self.session.headers.update(headers or {})
        # Given with every request, not as session attributes: requests lets REQUESTS_CA_BUNDLE
        # override a session's verify, and a CA configured for tmbmerge must win.
        self.cert = cert
        self.verify = verify

    def close(self) -> None:
        self.session.close()

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """One API call, retried (see the module docstring); returns any answer but a 5xx."""
        left = self.budget.check(self.url)
        timeout = (min(self.timeout[0], left), min(self.timeout[1], left))
        started = time.monotonic()
        before = self.budget.requests
        try:
            response = self.session.request(
                method,
                self.base + path,
                timeout=timeout,
                verify=self.verify,
                cert=self.cert,
                allow_redirects=False,
                **kwargs,
            )
        except requests.exceptions.SSLError as exc:
            raise CatalogError(
                f"{self.name}: TLS failure talking to {self.base}: {reason(exc)}"
            ) from None
        except requests.RequestException as exc:
            failure = f"{type(exc).__name__}: {reason(exc)}"
            response = None
        finally:
            self.budget.spend(time.monotonic() - started, requests=0)
        attempts = self.budget.requests - before
        if response is not None and response.status_code < 500:
            self.budget.spend(0.0)  # the attempt that answered
            return response
        if response is not None:
            failure = f"HTTP {response.status_code} {error_text(response)}"
        spent = " (the catalogue deadline is spent)" if self.budget.remaining() <= 0 else ""
        raise CatalogUnavailable(
            f"{self.name} {method} {path.split('?')[0]} failed {max(attempts, 1)} times{spent}, "
            f"last: {failure} (server {self.base})"
        )

    def json(self, response: requests.Response, what: str):
        try:
            return response.json()
        except ValueError:
            raise CatalogError(
                f"{self.name}: {what}: the answer is not JSON: {response.text[:80]!r}"
            ) from None


def error_text(response: requests.Response) -> str:
    """``Type: message`` from a JSON error body (SAM's ``{"error", "message"}``, MetaCat's
    ``{"error": {"type", "value"}}``), or the start of whatever came back."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "error" in body:
        error = body["error"]
        if isinstance(error, dict):
            error, message = error.get("type", "Error"), error.get("value")
        else:
            message = body.get("message")
        return f"{error}: {message}" if message else str(error)
    text = " ".join(response.text.split())
    return text[:120] or response.reason or ""


def reason(exc: BaseException) -> str:
    """What went wrong underneath a requests exception, on one line: the operating system's words
    (``Connection refused``, ``Name or service not known``) or urllib3's (``read timed out``),
    never a wrapper's text cut in the middle of a word."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    root: BaseException = exc
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, (ReadTimeoutError, ConnectTimeoutError)) and not isinstance(
            current, NewConnectionError
        ):
            return f"{type(current).__name__}: {str(current).rsplit(': ', 1)[-1]}"
        if isinstance(current, OSError) and current.strerror:
            return current.strerror
        root = current
        inner = [
            getattr(current, "reason", None),
            current.__cause__,
            current.__context__,
            *(arg for arg in current.args if isinstance(arg, BaseException)),
        ]
        pending.extend(e for e in inner if isinstance(e, BaseException))
    text = " ".join(str(root).split())
    # urllib3 wraps its messages as "<connection object>: what happened"; keep what happened
    text = text.rsplit(": ", 1)[-1] if ">: " in text or "): " in text else text
    return text if len(text) <= 200 else text[:200].rsplit(" ", 1)[0] + " ..."
