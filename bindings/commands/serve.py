"""``tmbmerge serve`` (the campaign page and its JSON API) and its set-up commands.

- ``tmbmerge serve --catalog sqlite:///campaign.db [--journals DIR ...] [--host 127.0.0.1 --port
  8080]`` starts the web application
  (``bindings.serve.app``) under uvicorn and prints the address it listens on (``--port 0``: any
  free port) on its first line;
- ``tmbmerge serve dataset add NAME --runs FIRST-LAST | --run-list R,R,... [--data-tier TIER]``
  defines a dataset; ``tmbmerge serve dataset list`` lists them;
- ``tmbmerge serve token add SITE`` issues a site's bearer token and prints it on its last line
  (only its hash is stored: this is the one chance to copy it).

The store is the sqlite catalogue (``--catalog``, default ``$TMBMERGE_CATALOG``); its tables are
created on first use.
"""

from __future__ import annotations

import json
import os

from .catalog import CATALOG_ENV


def register(subparsers) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="the campaign page: dataset assignment, monitoring, recovery, certification",
        description="Serve the campaign page and its JSON API from a sqlite catalogue. Reading "
        "is open; writes need a site token (tmbmerge serve token add SITE).",
    )
    _add_catalog(serve)
    serve.add_argument(
        "--journals",
        nargs="+",
        default=[],
        metavar="DIR",
        help="merge-run output folders whose journals the page monitors",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=int, default=8080, help="port (default 8080; 0: any free port)"
    )
    serve.set_defaults(func=run_serve)
    actions = serve.add_subparsers(dest="serve_action", metavar="ACTION")

    dataset = actions.add_parser("dataset", help="define and list datasets")
    dataset_actions = dataset.add_subparsers(dest="dataset_action", metavar="ACTION", required=True)
    add = dataset_actions.add_parser(
        "add", help="define a dataset: a run range and data tier, or a list of runs"
    )
    add.add_argument("name", metavar="NAME")
    runs = add.add_mutually_exclusive_group(required=True)
    runs.add_argument(
        "--runs", metavar="FIRST-LAST", help="the runs of this range that the catalogue holds"
    )
    runs.add_argument("--run-list", metavar="R,R,...", help="exactly these runs")
    add.add_argument(
        "--data-tier",
        default="unmerged-thumbnail",
        help="data tier of the dataset's files (default unmerged-thumbnail)",
    )
    _add_catalog(add)
    add.add_argument("--json", action="store_true", help="print the dataset as JSON")
    add.set_defaults(func=run_dataset_add)
    listing = dataset_actions.add_parser("list", help="list datasets, their site and state")
    _add_catalog(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=run_dataset_list)

    token = actions.add_parser("token", help="issue site tokens")
    token_actions = token.add_subparsers(dest="token_action", metavar="ACTION", required=True)
    token_add = token_actions.add_parser(
        "add", help="issue a bearer token for SITE (printed on the last line)"
    )
    token_add.add_argument("site", metavar="SITE")
    _add_catalog(token_add)
    token_add.add_argument(
        "--json", action="store_true", help='print {"site": SITE, "token": TOKEN} as JSON'
    )
    token_add.set_defaults(func=run_token_add)


def _add_catalog(parser) -> None:
    parser.add_argument(
        "--catalog",
        metavar="URL",
        default=os.environ.get(CATALOG_ENV),
        help=f"sqlite catalogue URL (default: ${CATALOG_ENV})",
    )


def _store(args):
    from bindings.serve.store import CampaignStore
    from engine.errors import UsageError

    if not args.catalog:
        raise UsageError(f"no catalogue: give --catalog sqlite:///path.db or set ${CATALOG_ENV}")
    return CampaignStore(args.catalog)


def run_dataset_add(args) -> int:
    from bindings.serve.store import parse_run_range
    from engine.errors import UsageError

    store = _store(args)
    if args.runs:
        dataset = store.add_dataset(
            args.name, runs=parse_run_range(args.runs), data_tier=args.data_tier
        )
    else:
        try:
            run_list = [int(r) for r in args.run_list.split(",") if r.strip()]
        except ValueError:
            raise UsageError(
                f"--run-list {args.run_list!r} is not a comma-separated list of run numbers"
            ) from None
        dataset = store.add_dataset(args.name, run_list=run_list, data_tier=args.data_tier)
    if args.json:
        print(json.dumps(dataset, indent=2))
    else:
        print(f"dataset {dataset['name']}: runs {_runs_text(dataset)}, {dataset['data_tier']}")
    return 0


def _runs_text(dataset) -> str:
    runs = dataset["runs"]
    return (
        f"{runs['first']}-{runs['last']}" if "first" in runs else ",".join(map(str, runs["list"]))
    )


def run_dataset_list(args) -> int:
    datasets = _store(args).datasets()
    if args.json:
        print(json.dumps(datasets, indent=2))
        return 0
    from ..tables import print_table, table

    shown = table("dataset", "runs", "state", "site")
    for d in datasets:
        shown.add_row(d["name"], _runs_text(d), d["state"], d["site"] or "")
    print_table(shown)
    return 0


def run_token_add(args) -> int:
    token = _store(args).add_token(args.site)
    if args.json:
        print(json.dumps({"site": args.site, "token": token}, indent=2))
        return 0
    print(f"token for site {args.site} (shown once; only its hash is stored):")
    print(token)
    return 0


def run_serve(args) -> int:
    import socket

    import uvicorn

    from bindings.serve.app import create_app
    from engine.errors import UsageError, os_reason

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} out of range 0..65535")
    for folder in args.journals:
        if not os.path.isdir(folder):
            raise UsageError("--journals: not a folder", path=folder)
    app = create_app(_store(args).url, args.journals)
    try:
        info = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {os_reason(exc)}") from None
    host, port = sock.getsockname()[:2]
    print(f"serving {args.catalog} on http://{host}:{port}/", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
