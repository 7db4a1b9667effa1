"""The ``--json`` shapes the README documents ("JSON reports"), read from its table, and a check
that a command's JSON has exactly the documented top-level keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


@dataclass(frozen=True)
class Shape:
    is_list: bool  # a list of objects (or of names, when it has no keys)
    required: frozenset[str]
    optional: frozenset[str]
    open: bool  # "...": more keys may come (a catalogue record)


def documented_shapes() -> dict[str, Shape]:
    text = README.read_text()
    section = text[text.index("### JSON reports") :]
    section = section[: section.index("\n## ")]
    shapes = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        commands, printed = line.strip("|").split("|", 1)
        top_level = printed
        while re.search(r"\([^()]*\)", top_level):  # what is in brackets describes nested values
            top_level = re.sub(r"\([^()]*\)", "", top_level)
        keys = re.findall(r"`([A-Za-z_]+\??)`", top_level)
        shape = Shape(
            is_list=printed.strip().startswith("a list"),
            required=frozenset(k for k in keys if not k.endswith("?")),
            optional=frozenset(k.rstrip("?") for k in keys if k.endswith("?")),
            open="..." in top_level,
        )
        for command in re.findall(r"`([a-z -]+)`", commands):
            shapes[command] = shape
    return shapes


def assert_documented(command: str, value) -> None:
    """``value`` (a command's parsed ``--json`` output) has the shape the README gives it."""
    shape = documented_shapes()[command]
    items = value if shape.is_list else [value]
    assert isinstance(value, list) == shape.is_list, (command, type(value))
    assert items, f"{command}: nothing to check the shape of"
    for item in items:
        if not shape.required and not shape.optional:
            assert isinstance(item, str), (command, item)  # a list of names
            continue
        keys = set(item)
        assert shape.required <= keys, (command, shape.required - keys)
        if not shape.open:
            assert keys <= shape.required | shape.optional, (
                command,
                keys - shape.required - shape.optional,
            )
