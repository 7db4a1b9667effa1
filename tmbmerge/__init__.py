"""The ``tmbmerge`` name for Python's ``-m``: ``python -m tmbmerge ARGS`` is the ``tmbmerge``
command.

The library itself is ``engine`` (merging, verification, the TMB container) and the command line
``bindings.cli``; this package only gives the command the name people type.
"""

from engine import __version__

__all__ = ["__version__"]
