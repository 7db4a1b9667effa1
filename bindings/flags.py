"""The command line's spelling of the library's parameters: one table, used wherever a line
the library wrote is shown.

The library's messages name what a caller can change as its API spells it (``force=True``,
``metadata="none"``, ``run=178000``, ``run=None``; a ``ParameterError`` lists the names in
``parameters``).  A command line user sets those with flags, so every line the CLI prints from
the library (error lines, skipped inputs, log records) goes through ``cli_wording``:
``force=True`` -> ``--force``, ``metadata="none"`` -> ``--metadata none``, ``run=178000`` ->
``--run 178000``, ``run=None`` -> ``no --run``.  JSON reports keep the library's wording.
"""

from __future__ import annotations

import re

#: Each API parameter the library's messages can name, with the flag that sets it.  A parameter
#: not listed here is ``--`` + its name with dashes (``skip_bad``: ``--skip-bad``), which is how
#: a ``ParameterError``'s names are spelt; only the names listed are rewritten inside a message.
FLAGS = {
    "threads": "--jobs",
    "retire": "--retire-inputs",
    "force": "--force",
    "overwrite": "--force",
    "metadata": "--metadata",
    "allow_mixed_runs": "--allow-mixed-runs",
    "declare_parents": "--declare-parents",
    "replan": "--replan",
    "skip_bad": "--skip-bad",
    "expect_complete": "--expect-complete",
    "run": "--run",
    "target_size": "--target-size",
    "max_events": "--max-events",
    "volume_bytes": "--volume",
    "link_rate": "--link",
    "max_utilisation": "--utilisation",
    "os_memory_bytes": "--os-memory",
}

# ``name=value`` for a listed name: True, None, a quoted string, or a bare word (a number).
_SETTING = re.compile(
    r"(?<![\w.\-/])(" + "|".join(FLAGS) + r")=(True|None|\"[^\"]*\"|'[^']*'|[\w.]+)"
)


def flag(parameter: str) -> str:
    """The flag that sets the API parameter ``parameter`` (``threads``: ``--jobs``)."""
    return FLAGS.get(parameter, "--" + parameter.replace("_", "-"))


def cli_wording(text: str) -> str:
    """``text`` (a library message) with each ``parameter=value`` it names as the flag giving
    it: ``force=True`` -> ``--force``, ``run=None`` -> ``no --run``, ``run=5`` -> ``--run 5``."""
    return _SETTING.sub(_as_flag, str(text))


def _as_flag(match: re.Match) -> str:
    name, value = match.groups()
    if value == "True":
        return FLAGS[name]
    if value == "None":
        return f"no {FLAGS[name]}"
    return f"{FLAGS[name]} {value.strip(chr(34) + chr(39))}"
