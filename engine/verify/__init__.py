"""Verification: single-file checks, crosschecks against records and other files, the dump.

- ``checks``: ``verify_file`` / ``verify_files``: structure, digests, optionally every event.
- ``crosscheck``: a file's real size/adler32/event count against its sidecar or catalogue record;
  a merged output's events against the concatenation of its inputs'.
- ``dump``: what ``tmbmerge dump`` shows: header, metadata, block table, totals, events.
"""

__all__ = ["FileReport", "verify_file", "verify_files"]


def __getattr__(name):
    if name in __all__:  # on first use: a merge needs ``merged`` and ``readback``, not ``checks``
        from . import checks

        return getattr(checks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
