"""The campaign web application: pages for people, a JSON API for production tools, one store.

Starlette (with uvicorn as the server; ``tmbmerge serve`` starts it): small, well kept, async
with a thread pool for the blocking sqlite work, Jinja2 templates for the pages, and a test
client; nothing the campaign needs from a bigger framework.  Every page is built from the same
functions as the API (``_run_view``, ``_recovery``, ``_certification``), so both always say
the same thing.

Who may do what: reading is open; every write needs ``Authorization: Bearer <token>`` of a site
(``tmbmerge serve token add SITE``).  No token or an unknown one: 401.  A site changing a dataset
another site holds: 403.  Errors are JSON ``{"error": ..., "kind": ...}`` with a 4xx status
(400 bad input, 404 unknown, 409 conflict, 413 body too large); a bug is a 500 with a one-line
JSON error, never a traceback.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path
from threading import Lock

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from engine.errors import (
    CampaignError,
    DatasetTaken,
    EngineError,
    IllegalTransition,
    UnknownDataset,
    UsageError,
)

from . import monitor, plots
from .certification import certification, load_samples
from .recovery import recovery_items
from .store import RELEASED, STATES, CampaignStore, parse_run_range

MAX_BODY = 64 << 10
MAX_RUN = 0xFFFFFFFF
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
log = logging.getLogger("tmbmerge.serve")


class Forbidden(CampaignError):
    """A site acting on a dataset another site holds."""


class Unauthorized(CampaignError):
    """No bearer token, or one no site was issued."""


def http_status(exc: EngineError) -> int:
    if isinstance(exc, Unauthorized):
        return 401
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, UnknownDataset):
        return 404
    if isinstance(exc, (DatasetTaken, IllegalTransition, CampaignError)):
        return 409
    if isinstance(exc, UsageError):
        return 400
    return 500


class Campaign:
    """The service's state: the store, the journal folders, a small cache of rendered plots."""

    def __init__(self, catalog_url: str, journals=()):
        self.store = CampaignStore(catalog_url)
        self.catalog_url = catalog_url
        self.journals = [Path(j).resolve() for j in journals]
        self._plots: OrderedDict = OrderedDict()
        self._plots_lock = Lock()

    def view(self) -> monitor.CatalogView:
        return monitor.CatalogView(self.store.connection())

    # --- what pages and API share --------------------------------------------------------
    def run_status(self, run: int, tier: str = monitor.UNMERGED_TIER, outputs=None) -> dict:
        return monitor.run_status(self.view(), run, self.journals, tier=tier, outputs=outputs)

    def dataset_view(self, name: str) -> dict:
        dataset = self.store.dataset(name)
        runs = monitor.dataset_runs(self.view(), dataset)
        outputs = monitor.journal_outputs(self.journals)  # read once for all the runs
        statuses = [self.run_status(run, dataset["data_tier"], outputs) for run in runs]
        dataset["totals"] = monitor.dataset_totals(statuses)
        dataset["run_status"] = [monitor.public(s) for s in statuses]
        dataset["recovery"] = [
            item for s in statuses for item in recovery_items(s, self.catalog_url)
        ]
        return dataset

    def recovery(self) -> list[dict]:
        """The recovery items of every dataset's runs and every journaled run."""
        view, runs = self.view(), {}
        for dataset in self.store.datasets():
            for run in monitor.dataset_runs(view, dataset):
                runs.setdefault(run, dataset["data_tier"])
        outputs = monitor.journal_outputs(self.journals)  # read once for all the runs
        for output in outputs:
            runs.setdefault(output.run, monitor.UNMERGED_TIER)
        return [
            item
            for run, tier in sorted(runs.items())
            for item in recovery_items(self.run_status(run, tier, outputs), self.catalog_url)
        ]

    def authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("a site bearer token is needed (Authorization: Bearer <token>)")
        site = self.store.site_of_token(token.strip())
        if site is None:
            raise Unauthorized("unknown token")
        return site

    def plot(self, key: tuple, render) -> bytes:
        with self._plots_lock:
            if key in self._plots:
                self._plots.move_to_end(key)
                return self._plots[key]
        image = render()
        with self._plots_lock:
            self._plots[key] = image
            while len(self._plots) > 64:
                self._plots.popitem(last=False)
        return image


# --- request parsing -------------------------------------------------------------------------
def _run_number(request: Request, key: str = "run", text: str | None = None) -> int:
    text = request.path_params.get(key) if text is None else text
    try:
        run = int(str(text))
    except ValueError:
        raise UsageError(f"{key} must be a run number, not {text!r}") from None
    if not 0 <= run <= MAX_RUN:
        raise UsageError(f"{key} {run} out of range 0..{MAX_RUN}")
    return run


def _reference(request: Request) -> int | None:
    text = request.query_params.get("reference")
    return _run_number(request, "reference", text) if text not in (None, "") else None


def _alpha(request: Request) -> float:
    text = request.query_params.get("alpha", "0.01")
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"alpha must be a number, not {text!r}") from None


async def _json_body(request: Request) -> dict:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise HTTPException(413, f"request body larger than {MAX_BODY} bytes")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, f"request body larger than {MAX_BODY} bytes")
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError("request body must be a JSON object")
    return data


def _campaign(request: Request) -> Campaign:
    return request.app.state.campaign


# --- API -------------------------------------------------------------------------------------
async def api_health(request: Request):
    """Liveness for production tools and load balancers: answers without touching the store."""
    return JSONResponse({"ok": True, "catalog": _campaign(request).catalog_url})


async def api_datasets(request: Request):
    return JSONResponse(
        {
            "datasets": await run_in_threadpool(_campaign(request).store.datasets),
            "states": list(STATES),
        }
    )


async def api_dataset_add(request: Request):
    campaign = _campaign(request)
    site = await run_in_threadpool(campaign.authenticate, request)
    body = await _json_body(request)
    unknown = set(body) - {"name", "runs", "data_tier"}
    if unknown:
        raise UsageError(f"unknown fields: {', '.join(sorted(unknown))} (name, runs, data_tier)")
    runs = body.get("runs")
    kwargs = {"data_tier": body.get("data_tier") or "unmerged-thumbnail", "created_by": site}
    if isinstance(runs, str):
        kwargs["runs"] = parse_run_range(runs)
    elif isinstance(runs, list):
        kwargs["run_list"] = runs
    else:
        raise UsageError('runs must be "FIRST-LAST" or a list of run numbers')
    dataset = await run_in_threadpool(campaign.store.add_dataset, body.get("name"), **kwargs)
    return JSONResponse(dataset, status_code=201)


async def api_dataset(request: Request):
    campaign = _campaign(request)
    return JSONResponse(await run_in_threadpool(campaign.dataset_view, request.path_params["name"]))


async def api_claim(request: Request):
    campaign = _campaign(request)
    site = await run_in_threadpool(campaign.authenticate, request)
    body = await _json_body(request)
    dataset, won = await run_in_threadpool(
        campaign.store.claim, request.path_params["name"], site, body.get("note")
    )
    return JSONResponse({"claimed": won, "dataset": dataset}, status_code=201 if won else 200)


async def api_status(request: Request):
    campaign = _campaign(request)
    site = await run_in_threadpool(campaign.authenticate, request)
    body = await _json_body(request)
    state = body.get("state")
    if not isinstance(state, str):
        raise UsageError(f'body needs "state": one of {", ".join(STATES[1:] + (RELEASED,))}')
    name = request.path_params["name"]

    def change():
        try:
            return campaign.store.set_state(name, site, state, body.get("note"))
        except DatasetTaken as exc:
            raise Forbidden(exc.message, path=exc.path) from None

    return JSONResponse(await run_in_threadpool(change))


async def api_run(request: Request):
    campaign = _campaign(request)
    run = _run_number(request)

    def build():
        status = campaign.run_status(run)
        return {**monitor.public(status), "recovery": recovery_items(status, campaign.catalog_url)}

    return JSONResponse(await run_in_threadpool(build))


async def api_recovery(request: Request):
    items = await run_in_threadpool(_campaign(request).recovery)
    return JSONResponse({"items": items, "count": len(items)})


async def api_certification(request: Request):
    campaign = _campaign(request)
    run, reference, alpha = _run_number(request), _reference(request), _alpha(request)
    result = await run_in_threadpool(
        certification, campaign.store, run, reference=reference, alpha=alpha
    )
    return JSONResponse(result)


# --- images ----------------------------------------------------------------------------------
async def merge_png(request: Request):
    campaign = _campaign(request)
    run = _run_number(request)

    def render():
        verdict = certification(campaign.store, run)
        if verdict["merge"] is None:
            raise UsageError(
                f"run {run} has no unmerged and merged histograms to overlay ({verdict['detail']})"
            )
        samples = load_samples(campaign.store, run)
        key = (
            "merge",
            run,
            tuple(sorted((s, tuple(h.files), h.events) for s, h in samples.items())),
            json.dumps(verdict["merge"], sort_keys=True),
        )
        return campaign.plot(
            key,
            lambda: plots.merge_overlay(
                run, samples["unmerged"], samples["merged"], verdict["merge"]
            ),
        )

    return Response(await run_in_threadpool(render), media_type="image/png")


async def reference_png(request: Request):
    campaign = _campaign(request)
    run, reference, alpha = _run_number(request), _reference(request), _alpha(request)
    if reference is None:
        raise UsageError("choose a reference run (?reference=RUN)")

    def render():
        verdict = certification(campaign.store, run, reference=reference, alpha=alpha)["reference"]
        mine, theirs = load_samples(campaign.store, run), load_samples(campaign.store, reference)
        mine, theirs = mine[verdict["sample"]], theirs[verdict["reference_sample"]]
        key = (
            "reference",
            run,
            reference,
            alpha,
            mine.events,
            tuple(mine.files),
            theirs.events,
            tuple(theirs.files),
        )
        return campaign.plot(
            key, lambda: plots.reference_overlay(run, mine, reference, theirs, verdict)
        )

    return Response(await run_in_threadpool(render), media_type="image/png")


# --- pages -----------------------------------------------------------------------------------
async def page_index(request: Request):
    campaign = _campaign(request)

    def build():
        datasets = campaign.store.datasets()
        view = campaign.view()
        for d in datasets:
            d["run_numbers"] = monitor.dataset_runs(view, d)
        return datasets

    datasets = await run_in_threadpool(build)
    return TEMPLATES.TemplateResponse(
        request,
        "index.html",
        {"datasets": datasets, "states": STATES, "catalog": campaign.catalog_url},
    )


async def page_dataset(request: Request):
    dataset = await run_in_threadpool(_campaign(request).dataset_view, request.path_params["name"])
    return TEMPLATES.TemplateResponse(request, "dataset.html", {"d": dataset, "states": STATES})


async def page_run(request: Request):
    campaign = _campaign(request)
    run, reference, alpha = _run_number(request), _reference(request), _alpha(request)

    def build():
        status = campaign.run_status(run)
        verdict = certification(campaign.store, run, reference=reference, alpha=alpha)
        runs = [r for r in campaign.store.certified_runs() if r != run]
        return status, verdict, runs

    status, verdict, runs = await run_in_threadpool(build)
    return TEMPLATES.TemplateResponse(
        request,
        "run.html",
        {
            "s": monitor.public(status),
            "recovery": recovery_items(status, campaign.catalog_url),
            "cert": verdict,
            "reference": reference,
            "alpha": alpha,
            "reference_runs": runs,
        },
    )


async def page_recovery(request: Request):
    items = await run_in_threadpool(_campaign(request).recovery)
    return TEMPLATES.TemplateResponse(request, "recovery.html", {"items": items})


# --- errors ----------------------------------------------------------------------------------
def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path.endswith(".png")


def _error_response(request: Request, status: int, message: str, kind: str):
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if _wants_json(request):
        return JSONResponse(
            {"error": message, "kind": kind, "status": status}, status_code=status, headers=headers
        )
    return TEMPLATES.TemplateResponse(
        request,
        "error.html",
        {"status": status, "message": message},
        status_code=status,
        headers=headers,
    )


async def engine_error(request: Request, exc: EngineError):
    return _error_response(request, http_status(exc), str(exc), exc.kind)


async def http_error(request: Request, exc: HTTPException):
    return _error_response(request, exc.status_code, str(exc.detail), "HTTPError")


async def internal_error(request: Request, exc: Exception):
    log.error("internal error on %s: %s: %s", request.url.path, type(exc).__name__, exc)
    return JSONResponse(
        {"error": f"internal error: {type(exc).__name__}", "kind": "InternalError", "status": 500},
        status_code=500,
    )


def create_app(catalog_url: str, journals=()) -> Starlette:
    routes = [
        Route("/", page_index),
        Route("/datasets/{name}", page_dataset),
        Route("/runs/{run}", page_run),
        Route("/runs/{run}/merge.png", merge_png),
        Route("/runs/{run}/reference.png", reference_png),
        Route("/recovery", page_recovery),
        Route("/api/health", api_health, methods=["GET"]),
        Route("/api/datasets", api_datasets, methods=["GET"]),
        Route("/api/datasets", api_dataset_add, methods=["POST"]),
        Route("/api/datasets/{name}", api_dataset, methods=["GET"]),
        Route("/api/datasets/{name}/claim", api_claim, methods=["POST"]),
        Route("/api/datasets/{name}/status", api_status, methods=["POST"]),
        Route("/api/runs/{run}", api_run, methods=["GET"]),
        Route("/api/recovery", api_recovery, methods=["GET"]),
        Route("/api/certification/{run}", api_certification, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            EngineError: engine_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
    )
    app.state.campaign = Campaign(catalog_url, journals)
    warm_up()
    return app


def warm_up() -> None:
    """Import what the first certification request needs now, not while a client waits
    (scipy.stats alone takes seconds on a busy machine)."""
    import matplotlib.figure  # noqa: F401
    import scipy.stats  # noqa: F401
