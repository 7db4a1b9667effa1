"""A small SAM web server for tests: the API calls tmbmerge makes, an in-memory store, injectable
failures.

It answers on 127.0.0.1 at an ephemeral port, in a thread of the test process, under
``/sam/EXPERIMENT/api``:

- ``POST /files`` (``application/json``): declare; answers the new file id as text; 409
  ``FileAlreadyExists`` for a known name; 404 ``FileNotFound`` for an unknown parent;
- ``GET /files/name/NAME/metadata``: the record (404 ``FileNotFound``);
- ``POST /files/metadata`` (form field ``file_name`` repeated): a JSON list of the records of
  the known names (unknown names are left out, as SAM's ``getMultipleMetadata`` does);
- ``GET /files/name/NAME/lineage/{parents,children}``: ``[{"file_name", "file_id"}, ...]``;
- ``GET /files/list?dims=...``: a JSON list of names; dimensions are clauses joined by
  `` and ``: ``run_number N``, ``data_tier T``, ``file_name a, b``, ``ischildof: (file_name a, b)``
  (children of those files), ``isparentof: (file_name a, b)`` (their parents), and the two
  nested once: ``ischildof: (isparentof: (file_name a))`` (the files sharing a parent with a).

Errors are JSON ``{"error": Type, "message": ...}``.  Records are stored as posted (a test may
also put legacy records, e.g. with ``enstore`` checksums, straight into ``store``).  Tests can
make the next requests fail (``fail_next``), answer anything at all (``answer_next``, e.g. a
proxy's ``200 <html>``), drop the connection without answering (``drop_next``), answer slowly
(``delay_next``, a hang when longer than the client's timeout), run a function just before a
declaration is stored (``before_declare``), require a bearer token, or serve TLS that demands
a client certificate (``ssl_context``).  Every request is recorded in ``requests`` as
``(method, path, headers)``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

#: What ``handle`` returns to make the handler close the connection without an answer.
DROP = (0, "", "")


class SamWebServer:
    def __init__(
        self, experiment: str = "test", *, token: str | None = None, ssl_context=None
    ) -> None:
        self.prefix = f"/sam/{experiment}/api"
        self.token = token
        self.store: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self._lock = threading.Lock()
        self._next_id = 1
        self._failures: list[tuple[int, dict | None]] = []
        self._delays: list[float] = []
        self.before_declare = None  # called with the metadata just before a declaration is stored
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        self.scheme = "https" if ssl_context is not None else "http"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # --- lifetime -----------------------------------------------------------------------

    def start(self) -> SamWebServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SamWebServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The catalogue URL tmbmerge is given."""
        return f"samweb+{self.scheme}://127.0.0.1:{self.port}{self.prefix}"

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{self.prefix}"

    # --- steering -----------------------------------------------------------------------

    def fail_next(
        self, count: int, status: int = 503, error: str | None = None, message: str = ""
    ) -> None:
        """Answer the next ``count`` requests with ``status`` (JSON error body when ``error``)."""
        body = {"error": error, "message": message} if error else None
        with self._lock:
            self._failures.extend([(status, body)] * count)

    def answer_next(
        self, count: int, status: int, body: str, content_type: str = "text/html"
    ) -> None:
        """Answer the next ``count`` requests with exactly this, whatever they ask."""
        with self._lock:
            self._failures.extend([(status, (content_type, body))] * count)

    def drop_next(self, count: int) -> None:
        """Close the connection of the next ``count`` requests without answering."""
        with self._lock:
            self._failures.extend([DROP[:2]] * count)

    def delay_next(self, count: int, seconds: float) -> None:
        """Handle the next ``count`` requests normally, but only after ``seconds``."""
        with self._lock:
            self._delays.extend([seconds] * count)

    def clear_faults(self) -> None:
        """Forget the failures and delays still queued."""
        with self._lock:
            self._failures.clear()
            self._delays.clear()

    def put(self, metadata: dict) -> int:
        """Store a record directly, as a server-side import would."""
        with self._lock:
            return self._store(dict(metadata))

    def _store(self, metadata: dict) -> int:
        file_id = self._next_id
        self._next_id += 1
        metadata["file_id"] = file_id
        self.store[metadata["file_name"]] = metadata
        return file_id

    def _take(self, queue: list):
        with self._lock:
            return queue.pop(0) if queue else None

    # --- the API ------------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: dict, body: bytes
    ) -> tuple[int, str, str]:
        """(status, content type, body) for one request."""
        self.requests.append((method, raw_path, headers))
        delay = self._take(self._delays)
        failure = self._take(self._failures)
        if failure is not None:
            status, error = failure
            if status == 0:
                return DROP
            if isinstance(error, tuple):
                if delay:
                    time.sleep(delay)
                return (status, *error)
            return (
                (status, "application/json", json.dumps(error))
                if error
                else (status, "text/plain", "Service Unavailable")
            )
        if self.token is not None and not self.authorized(headers):
            return _error(401, "AuthenticationError", "a valid bearer token is required")
        parts = urlsplit(raw_path)
        if not parts.path.startswith(self.prefix + "/"):
            return _error(404, "NotFound", f"no such API path {parts.path}")
        answer = self.route(
            method, parts.path[len(self.prefix) :], parse_qs(parts.query), headers, body
        )
        if delay:
            time.sleep(delay)
        return answer

    def authorized(self, headers: dict) -> bool:
        return headers.get("Authorization") == f"Bearer {self.token}"

    def route(
        self, method: str, path: str, query: dict, headers: dict, body: bytes
    ) -> tuple[int, str, str]:
        """The API proper (a subclass serves another API with the same steering)."""
        if method == "POST" and path == "/files":
            answer = self._declare(headers, body)
        elif method == "POST" and path == "/files/metadata":
            answer = self._many(body)
        elif method == "GET":
            answer = self._get(path, query)
        else:
            answer = _error(405, "MethodNotAllowed", f"{method} {path}")
        return answer

    def _declare(self, headers: dict, body: bytes) -> tuple[int, str, str]:
        if headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return _error(400, "InvalidContentType", "metadata must be application/json")
        try:
            metadata = json.loads(body)
        except ValueError as exc:
            return _error(400, "InvalidMetadata", f"not JSON: {exc}")
        if not isinstance(metadata, dict) or not isinstance(metadata.get("file_name"), str):
            return _error(400, "InvalidMetadata", "file_name is required")
        with self._lock:
            name = metadata["file_name"]
            if name in self.store:
                return _error(409, "FileAlreadyExists", f"File {name} already exists")
            for parent in metadata.get("parents", []):
                if parent["file_name"] not in self.store:
                    return _error(
                        404, "FileNotFound", f"Parent file {parent['file_name']} not found"
                    )
        if self.before_declare is not None:
            self.before_declare(metadata)
        with self._lock:
            if name in self.store:
                return _error(409, "FileAlreadyExists", f"File {name} already exists")
            file_id = self._store(metadata)
        return 200, "text/plain", f"{file_id}\n"

    def _get(self, path: str, query: dict) -> tuple[int, str, str]:
        match = re.fullmatch(
            r"/files/name/([^/]+)/(metadata|lineage/parents|lineage/children)", path
        )
        if match:
            name, what = unquote(match.group(1)), match.group(2)
            with self._lock:
                if name not in self.store:
                    return _error(404, "FileNotFound", f"File {name} not found")
                if what == "metadata":
                    return _json(self.store[name])
                if what == "lineage/parents":
                    names = [parent["file_name"] for parent in self.store[name].get("parents", [])]
                else:
                    names = sorted(
                        child
                        for child, md in self.store.items()
                        if any(p["file_name"] == name for p in md.get("parents", []))
                    )
                return _json([{"file_name": n, "file_id": self.store[n]["file_id"]} for n in names])
        if path == "/files/list":
            return self._list(query.get("dims", [""])[0])
        return _error(404, "NotFound", f"no such API path {path}")

    def _many(self, body: bytes) -> tuple[int, str, str]:
        names = parse_qs(body.decode("utf-8")).get("file_name", [])
        with self._lock:
            return _json([self.store[name] for name in names if name in self.store])

    def _list(self, dims: str) -> tuple[int, str, str]:
        with self._lock:
            tests = []
            for clause in dims.split(" and "):
                test = self._clause(clause.strip())
                if test is None:
                    return _error(400, "DimensionError", f"cannot parse dimensions {dims!r}")
                tests.append(test)
            return _json(
                sorted(name for name, md in self.store.items() if all(test(md) for test in tests))
            )

    def _selected(self, dims: str) -> set[str] | None:
        """Names selected by ``file_name a, b`` or a lineage clause (None when not understood)."""
        field, _, value = dims.partition(" ")
        if field == "file_name" and value:
            return {n.strip() for n in value.split(",")}
        lineage = re.fullmatch(r"(ischildof|isparentof): \((.+)\)", dims)
        if not lineage:
            return None
        names = self._selected(lineage.group(2))
        if names is None:
            return None
        if lineage.group(1) == "ischildof":
            return {
                n
                for n, md in self.store.items()
                if any(p["file_name"] in names for p in md.get("parents", []))
            }
        return {
            p["file_name"]
            for n in names
            if n in self.store
            for p in self.store[n].get("parents", [])
        }

    def _clause(self, clause: str):
        """A test of a record for one dimension clause (None when it is not understood)."""
        if clause.startswith(("ischildof:", "isparentof:")):
            selected = self._selected(clause)
            return None if selected is None else (lambda md: md["file_name"] in selected)
        field, _, value = clause.partition(" ")
        if field == "file_name" and value:
            names = {n.strip() for n in value.split(",")}
            return lambda md: md["file_name"] in names
        if field == "run_number" and value.isdigit():
            return lambda md, run=int(value): any(r[0] == run for r in md.get("runs", []))
        if field == "data_tier" and value and " " not in value:
            return lambda md, tier=value: md.get("data_tier") == tier
        return None


def _json(value) -> tuple[int, str, str]:
    return 200, "application/json", json.dumps(value)


def _error(status: int, error: str, message: str) -> tuple[int, str, str]:
    return status, "application/json", json.dumps({"error": error, "message": message})


def _handler_for(server: SamWebServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, content_type, text, *extra = server.handle(
                method, self.path, dict(self.headers), body
            )
            if status == 0:  # DROP: no answer at all
                self.close_connection = True
                return
            data = text.encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (extra[0] if extra else {}).items():  # a subclass's own headers
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (read timeout)
                pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def log_message(self, format, *args) -> None:  # keep test output clean
            pass

    return Handler
