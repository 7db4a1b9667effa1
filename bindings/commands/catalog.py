"""``tmbmerge catalog ...`` (import sidecars, look files and lineage up) and ``tmbmerge declare``.

Every command takes ``--catalog URL`` (default: the ``TMBMERGE_CATALOG`` environment
variable); see docs/CATALOG.md for the URL forms.  Look-ups print one name per line, or JSON
with ``--json``.  ``catalog import`` and ``declare`` go on after a file fails, report every
failure on its own line, and exit with the code of the first failure (0 if none failed).
"""

from __future__ import annotations

import argparse
import json
import os

from ._common import add_verbosity, print_error

CATALOG_ENV = "TMBMERGE_CATALOG"


def register(subparsers) -> None:
    catalog = subparsers.add_parser(
        "catalog",
        help="import sidecars into a catalogue, look files and their lineage up",
        description="Work with a file catalogue (sqlite:PATH, samweb+https://HOST/sam/EXP/api, "
        "exec:COMMAND).",
    )
    actions = catalog.add_subparsers(dest="catalog_action", metavar="ACTION", required=True)

    importer = actions.add_parser(
        "import", help="declare every *.json sidecar in a directory, parents first"
    )
    importer.add_argument("directory", metavar="DIR", help="directory holding <file>.json sidecars")
    _add_declare_options(importer)
    importer.set_defaults(func=run_import)

    show = actions.add_parser("show", help="print the catalogue record of a file")
    show.add_argument("name", metavar="NAME", help="file name as declared")
    show.add_argument(
        "--samweb",
        action="store_true",
        help="print it as `samweb get-metadata` does (--json is SAM's JSON shape already)",
    )
    _add_common_options(show)
    show.set_defaults(func=run_show)

    run = actions.add_parser("run", help="list the files of a run")
    run.add_argument("run", metavar="RUN", type=int, help="run number")
    run.add_argument(
        "--data-tier", metavar="TIER", help="only files of this data tier (e.g. unmerged-thumbnail)"
    )
    _add_common_options(run)
    run.set_defaults(func=run_run)

    for direction in ("parents", "children"):
        lineage = actions.add_parser(direction, help=f"list the {direction} of a file")
        lineage.add_argument("name", metavar="NAME", help="file name as declared")
        _add_common_options(lineage)
        lineage.set_defaults(func=run_lineage, direction=direction)

    declare = subparsers.add_parser(
        "declare",
        help="declare files to the catalogue from their sidecars (e.g. to retry a declaration)",
        description="Declare each OUTPUT from its <OUTPUT>.json sidecar, after checking the "
        "file's name and size.",
    )
    declare.add_argument(
        "outputs", metavar="OUTPUT", nargs="+", help="data files, each with a sidecar beside it"
    )
    _add_declare_options(declare)
    declare.set_defaults(func=run_declare)


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", metavar="URL", help=f"catalogue URL (default: ${CATALOG_ENV})")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_verbosity(parser, None)


def _add_declare_options(parser: argparse.ArgumentParser) -> None:
    _add_common_options(parser)
    parser.add_argument(
        "--declare-parents",
        action="store_true",
        help="declare undeclared parents first: from their sidecars when found, else as "
        "name-only placeholders",
    )
    parser.add_argument(
        "--declarer", metavar="NAME", help="declarer plugin (entry point group tmbmerge.declarers)"
    )


def _open_catalog(args, *, create: bool = False):
    """The catalogue of --catalog or $TMBMERGE_CATALOG; only ``catalog import`` may create one."""
    from bindings.catalog import open_catalog
    from engine.errors import UsageError

    url = args.catalog or os.environ.get(CATALOG_ENV)
    if not url:
        raise UsageError(f"no catalogue: give --catalog URL or set {CATALOG_ENV}")
    return open_catalog(url, create=create)


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


# --- look-ups -------------------------------------------------------------------------------


def run_show(args) -> int:
    with _open_catalog(args) as catalog:
        record = catalog.get(args.name)
    if args.json:
        _print_json(record)
    elif args.samweb:
        from bindings.catalog.samweb_format import samweb_text

        print(samweb_text(record))
    else:
        from ..tables import print_table, table

        shown = table("field", "value", header=False)
        for key, value in record.items():
            shown.add_row(key, str(value) if isinstance(value, (str, int)) else json.dumps(value))
        print_table(shown)
    return 0


def run_run(args) -> int:
    with _open_catalog(args) as catalog:
        names = catalog.files(run=args.run, data_tier=args.data_tier)
    _print_names(names, args.json)
    return 0


def run_lineage(args) -> int:
    with _open_catalog(args) as catalog:
        names = (
            catalog.parents(args.name)
            if args.direction == "parents"
            else catalog.children(args.name)
        )
    _print_names(names, args.json)
    return 0


def _print_names(names: list[str], as_json: bool) -> None:
    if as_json:
        _print_json(names)
    else:
        for name in names:
            print(name)


# --- declaring ------------------------------------------------------------------------------


def run_declare(args) -> int:
    from bindings.catalog.hook import declare_file
    from engine.catalog import load_declarer
    from engine.errors import EngineError

    results, failures = [], []
    with _open_catalog(args) as catalog:
        declarer = load_declarer(args.declarer, catalog)
        for output in args.outputs:
            try:
                result = declare_file(
                    output, catalog, declare_parents=args.declare_parents, declarer=declarer
                )
            except EngineError as exc:
                failures.append((output, exc))
                print_error(exc)
                continue
            results.append(result)
            if not args.json:
                shown_id = f" (file id {result.file_id})" if result.file_id is not None else ""
                print(f"{result.file_name}: {result.status}{shown_id}")
    if args.json:
        _print_json(
            {
                "declared": [result._asdict() for result in results],
                "failed": [{"file": output, **exc.to_dict()} for output, exc in failures],
                "catalog": catalog.budget.to_dict(),
            }
        )
    return failures[0][1].exit_code if failures else 0


def run_import(args) -> int:
    from bindings.catalog import ALREADY_DECLARED, DECLARED
    from bindings.catalog.hook import declare_file
    from engine.catalog import load_declarer
    from engine.errors import EngineError, InputNotFound, UsageError
    from engine.remote import location

    directory = location(args.directory)  # a local folder, or a remote one listed over its protocol
    if not directory.is_dir():
        raise InputNotFound("not a directory", path=directory)
    failures: list[tuple[str, EngineError]] = []
    data_paths = _parents_first(directory, failures)
    if not data_paths and not failures:
        raise UsageError("no *.json sidecars to import", path=directory)

    by_status: dict[str, list[str]] = {DECLARED: [], ALREADY_DECLARED: []}
    parents_declared: list[str] = []

    def count_parent(result) -> None:
        if result.status == DECLARED:
            parents_declared.append(result.file_name)

    with _open_catalog(args, create=True) as catalog:  # the one command that makes a new catalogue
        declarer = load_declarer(args.declarer, catalog)
        for data_path in data_paths:
            try:
                result = declare_file(
                    data_path,
                    catalog,
                    declare_parents=args.declare_parents,
                    parents_dir=directory,
                    declarer=declarer,
                    require_data=False,
                    on_parent=count_parent,
                )
            except EngineError as exc:
                failures.append((data_path.name, exc))
                continue
            by_status[result.status].append(result.file_name)
    for _, exc in failures:
        print_error(exc)
    if args.json:
        _print_json(
            {
                "declared": by_status[DECLARED],
                "already_declared": by_status[ALREADY_DECLARED],
                "parents_declared": parents_declared,
                "failed": [{"file": name, **exc.to_dict()} for name, exc in failures],
                "catalog": catalog.budget.to_dict(),
            }
        )
    else:
        line = (
            f"declared {len(by_status[DECLARED])}, already declared "
            f"{len(by_status[ALREADY_DECLARED])}, failed {len(failures)}"
        )
        if parents_declared:
            line += (
                f"; {len(parents_declared)} parents without sidecars in {directory} declared first"
            )
        print(line)
    return failures[0][1].exit_code if failures else 0


def _parents_first(directory, failures: list) -> list:
    """Data paths of the sidecars in ``directory``, each after its parents that are also there.

    Sidecars that cannot be read are added to ``failures`` and left out.
    """
    from engine.errors import EngineError
    from engine.metadata import SIDECAR_SUFFIX, normalize_metadata, read_sidecar

    parents: dict[str, list[str]] = {}
    paths = {}
    for sidecar in sorted(p for p in directory.iterdir() if p.name.endswith(SIDECAR_SUFFIX)):
        data_path = sidecar.with_name(sidecar.name.removesuffix(SIDECAR_SUFFIX))
        try:
            md = normalize_metadata(read_sidecar(data_path))
        except EngineError as exc:
            failures.append((sidecar.name, exc.with_path(sidecar)))
            continue
        paths[data_path.name] = data_path
        parents[data_path.name] = [parent["file_name"] for parent in md.get("parents", [])]

    ordered: list[str] = []
    placed: set[str] = set()
    for start in sorted(paths):
        stack = [(start, iter(parents[start]))]
        while stack:  # depth-first, iterative: lineage chains may be long
            name, pending = stack[-1]
            on_stack = {entry for entry, _ in stack}
            parent = next(
                (p for p in pending if p in paths and p not in placed and p not in on_stack), None
            )
            if parent is not None:
                stack.append((parent, iter(parents[parent])))
                continue
            stack.pop()
            if name not in placed:
                placed.add(name)
                ordered.append(name)
    return [paths[name] for name in ordered]
