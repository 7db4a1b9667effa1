"""A declare-only catalogue that runs a site's own declaration tool.

URL: ``exec:COMMAND`` (split like a shell would, with ``shlex``; no shell runs it).  For each
declaration the command gets the normalized metadata as JSON on its standard input.  Exit
status 0 means declared (if the first line of its output is a number, it is taken as the
file id); any other status is a failed declaration, reported with the last line the command
wrote to its standard error.

The tool owns the catalogue, so it owns the rules too: idempotency, conflicts and unknown
parents are whatever the tool says.  Nothing can be looked up through it, so ``get``,
``exists``, ``children``, ``parents`` and ``files`` raise ``CatalogError`` saying so.
"""

from __future__ import annotations

import json
import shlex
import subprocess

from engine.errors import CatalogError, UsageError

from .base import DECLARED, Catalog, DeclareResult, not_available, prepare_declaration

DEFAULT_TIMEOUT = 600.0


class ExecCatalog(Catalog):
    """Declarations through an external command (see the module docstring)."""

    queryable = False

    def __init__(
        self, command: list[str], *, url: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        if not command:
            raise UsageError("exec: catalogue URL names no command (exec:COMMAND ARGS...)")
        super().__init__(url or "exec:" + shlex.join(command))
        self.command = command
        self.timeout = timeout

    @classmethod
    def from_url(cls, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> ExecCatalog:
        scheme, _, command = url.partition(":")
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise UsageError(f"{url!r}: cannot split the command: {exc}") from None
        return cls(argv, url=url, timeout=timeout)

    def declare(self, metadata: dict, *, exclusive_tier: str | None = None) -> DeclareResult:
        """Run the tool; a declare-only catalogue cannot look lineage up, so ``exclusive_tier``
        (not merged twice) is the site tool's own business, as documented in docs/CATALOG.md."""
        md = prepare_declaration(metadata)
        name = md["file_name"]
        shown = shlex.join(self.command)
        try:
            done = subprocess.run(
                self.command,
                input=json.dumps(md, sort_keys=True).encode("utf-8"),
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise CatalogError(f"exec: command not found: {self.command[0]}", path=name) from None
        except PermissionError:
            raise CatalogError(
                f"exec: command not executable: {self.command[0]}", path=name
            ) from None
        except subprocess.TimeoutExpired:
            raise CatalogError(
                f"exec: `{shown}` did not finish within {self.timeout:g} s", path=name
            ) from None
        if done.returncode != 0:
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            why = lines[-1].strip() if lines else "no message on stderr"
            status = (
                f"exit status {done.returncode}"
                if done.returncode > 0
                else f"signal {-done.returncode}"
            )
            raise CatalogError(f"exec: `{shown}` failed ({status}): {why}", path=name)
        first = done.stdout.decode("utf-8", "replace").strip().split("\n", 1)[0].strip()
        return DeclareResult(name, DECLARED, int(first) if first.isdigit() else None)

    def get(self, file_name: str) -> dict:
        raise not_available("exec", "get (looking a file up)")

    def exists(self, file_name: str) -> bool:
        raise not_available("exec", "exists (looking a file up)")

    def children(self, file_name: str) -> list[str]:
        raise not_available("exec", "children (lineage)")

    def parents(self, file_name: str) -> list[str]:
        raise not_available("exec", "parents (lineage)")

    def files(self, run: int | None = None, data_tier: str | None = None) -> list[str]:
        raise not_available("exec", "files (listing)")
