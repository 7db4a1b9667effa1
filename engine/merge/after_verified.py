"""What follows a verified, published output: declare it, then retire its inputs.

One step for every merge.  ``merge_files`` (and a remote output once staged out) declares its
output with ``--declare``; ``merge_run`` declares each output in its own process as a worker
reports it verified, retires its inputs once it is declared, and does both for the outputs an
earlier merge-run finished (re-reading them first).  In that order, and each only after the one
before succeeded:

1. **declare** (``spec.declare``): the record the merge wrote for the output (its sidecar's
   contents, handed over in the ``MergeReport``; read from the sidecar, checked against the
   file, only for an output an earlier merge-run finished) goes to the catalogue
   (``MergeCatalog.declare``), then with ``--register`` its replica
   (``MergeCatalog.register``);
2. **retire** (``retire``, merge-run only): retirement is earned (``retire.check_retirable``),
   then each input is moved or deleted, journaled first (``retire.retire_inputs``).

A step that fails is reported (``report.declared``/``declare_error``; with a journal, the
entry's error and the merge-run's failures) and stops the steps after it for that output; the
verified output always stays.  With a journal (merge-run) each step's result is the output's
``JournalState``: verified, declared, retired.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import EngineError
from ..remote import location
from .catalog import MergeCatalog
from .journal import Journal, JournalState
from .report import MergeReport
from .spec import MergeSpec

log = logging.getLogger(__name__)


class AfterVerified:
    """Declare, then retire: ``after(report, state)`` for each verified output (see the module
    docstring).  ``journal``, ``retire``, ``retire_dir`` and ``failures`` are merge-run's: its
    journal, ``"move"``/``"delete"``, where moved inputs go, and the merge-run's failure list."""

    def __init__(
        self,
        catalog: MergeCatalog | None,
        spec: MergeSpec,
        *,
        journal: Journal | None = None,
        retire: str | None = None,
        retire_dir=None,
        failures: list[dict[str, Any]] | None = None,
    ):
        self.catalog, self.spec, self.journal = catalog, spec, journal
        self.retire = retire
        self.retire_dir = location(retire_dir) if retire_dir else None
        self.failures = failures if failures is not None else []

    def __call__(
        self,
        report: MergeReport,
        state: JournalState = JournalState.VERIFIED,
        *,
        reverify: bool = False,
    ) -> JournalState:
        """Take ``report``'s output from ``state`` as far as it goes; the state it reached.

        ``reverify``: the output was finished by an earlier run; it is re-read (every digest,
        size and adler32 against the journal) before anything is done with it.
        """
        before = state
        try:
            state = self._declare_and_retire(report, state, reverify)
        finally:
            if report.status.startswith("already ") and state != before:
                # e.g. "already verified, now retired"
                report.status = f"{report.status}, now {state}"
        return state

    def _declare_and_retire(
        self, report: MergeReport, state: JournalState, reverify: bool
    ) -> JournalState:
        name = report.output.name
        declaring = self.spec.declare and state == JournalState.VERIFIED
        if reverify and declaring and self.journal is not None:
            from .retire import reverify_output  # (retiring re-verifies on its own, just before)

            try:
                reverify_output(report.output, self.journal.get(name))
            except EngineError as exc:
                self._failed(name, state, f"re-verification failed: {exc}", exc)
                return state
        if declaring:
            self.declare(report)
            if report.declare_error is not None:
                self._failed(
                    name, state, f"declaration failed: {report.declare_error}", report.declare_error
                )
                return state
            state = self._reached(name, JournalState.DECLARED)
        if self.retire and state == JournalState.DECLARED:
            try:
                report.retired = self._retire(report)
            except EngineError as exc:  # like a failed declaration: reported, the others go on
                self._failed(name, state, f"retirement failed: {exc}", exc.with_path(report.output))
                return state
            state = self._reached(name, JournalState.RETIRED)
        return state

    def declare(self, report: MergeReport) -> None:
        """Declare a published output (then register its replica); a failure is recorded in the
        report (``declared``, ``registered``, ``declare_error``), and the output stays."""
        catalog = self.catalog
        assert catalog is not None  # MergeSpec: declaring needs a catalogue
        try:
            record = report.metadata or _sidecar_record(report.output)
            report.declared = catalog.declare(record).status
            log.info("%s: %s in the catalogue", report.output, report.declared)
        except EngineError as exc:
            report.declared = "failed"
            report.declare_error = exc.with_path(report.output)
            return
        try:  # with --register: the replica too; until it is, the output counts as not declared
            report.registered = catalog.register(report.output, record)
        except EngineError as exc:
            report.registered = "failed"
            report.declare_error = exc.with_path(report.output)

    def _retire(self, report: MergeReport) -> list[dict]:
        from .retire import check_retirable, retire_inputs

        journal, action, name = self.journal, self.retire, report.output.name
        assert journal is not None and action is not None  # retiring is merge-run's
        chosen = check_retirable(
            report.output,
            journal.get(name),
            self.catalog,
            action=action,
            retire_dir=self.retire_dir,
        )
        return retire_inputs(
            [i["path"] for i in chosen],
            action=action,
            retire_dir=self.retire_dir,
            aliases={i["path"]: i["given"] for i in chosen if i.get("given")},
            record=lambda path, done, dest: journal.record_retired(path, name, done, dest),
        )

    def _reached(self, name: str, state: JournalState) -> JournalState:
        if self.journal is not None:
            self.journal.set_state(name, state)
        return state

    def _failed(self, name: str, state: JournalState, said: str, exc: EngineError) -> None:
        if self.journal is not None:
            self.journal.set_state(name, state, error=said)
            self.failures.append({"output": name, **exc.to_dict()})


def _sidecar_record(output: Path) -> dict:
    """The record of an output an earlier run finished: its sidecar, checked against the file."""
    from ..verify.checks import checked_sidecar

    return checked_sidecar(location(output))
