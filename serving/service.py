"""The BentoML 1.4 prediction service: `bentoml serve serving.service:PropensityService`
(what `propensity serve` runs).

Routes (a Starlette app mounted into the BentoML service, so status codes are ours to choose):
- POST /predict           {customer_ids, models?, top_k?, lang?}: features from the Feast online store
- POST /predict_features  {rows: [{feature: value, ...}], models?, top_k?, lang?}: caller's features
- GET  /healthz           alive, with the model versions in the body (open, no key)
- GET  /readyz            200 only with every model loaded, the online store answering and an API key
                          configured (or allow_no_api_key), else 503
- GET  /ui                the staff page; its data: GET /ui/api/flagged (one page of a queue's list) and
                          GET /ui/api/customer (one customer's detail), key required; GET /ui/labels
                          (display names per language, open)
- GET  /docs.json         the OpenAPI document (serving.openapi); GET /metrics (serving.metrics)

Data routes need the X-API-Key header (401 without). Bodies are read with a size limit and fully checked
(serving.requests) before a request joins a batch. ``EdgeMiddleware`` answers unknown paths (404) and
wrong methods (405) itself and counts every request under its route. The request logic lives in
serving.config, serving.errors, serving.requests, serving.registry and serving.predictor (no HTTP there).

Speed: concurrent /predict calls are batched in-process (``MicroBatcher``): while one batch is being
scored in a worker thread, new requests queue, and the next batch takes them all, so one feature look-up
and one LightGBM call serve many requests at load while a lone request never waits for a timer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from serving import metrics
from serving.config import WORKERS_ENV, load_serving_config, served_models
from serving.errors import NO_KEY, PayloadTooLarge, ServingError, check_api_key, writable
from serving.metrics import UNKNOWN_ROUTE
from serving.openapi import openapi_document
from serving.predictor import Predictor
from serving.privacy import ForgottenIds
from serving.registry import ModelRegistry
from serving.requests import PredictFeaturesRequest, PredictRequest, decode_json, parse_request
from serving.staff import StaffLists, vocabulary

log = logging.getLogger("propensity.serving")

UI_DIR = Path(__file__).parent / "ui"


class MicroBatcher:
    """Opportunistic batching of /predict requests: no timer, the batch is whatever queued meanwhile."""

    def __init__(self, predictor: Predictor, max_customers: int):
        self.predictor = predictor
        self.max_customers = max_customers
        self._queue: list[tuple[PredictRequest, asyncio.Future]] = []
        self._draining = False

    async def submit(self, request: PredictRequest) -> dict[str, Any]:
        future = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[PredictRequest, asyncio.Future]]:
        batch, size = [], 0
        while self._queue and (not batch or size + len(self._queue[0][0].customer_ids) <= self.max_customers):
            item = self._queue.pop(0)
            batch.append(item)
            size += len(item[0].customer_ids)
        return batch

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._answer(self._take())
        finally:
            self._draining = False

    async def _answer(self, batch: list[tuple[PredictRequest, asyncio.Future]]) -> None:
        """Score ``batch`` in one call. If that fails, a cause shared by every request (store down, no
        models) answers them all; any other failure is retried request by request, so one request that
        breaks the scoring gets its own error and the others of its batch their answers."""
        try:
            answers = await asyncio.to_thread(self.predictor.predict_many, [r for r, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and not getattr(exc, "shared", False):
                log.warning("a batch of %d requests failed (%s: %s); answering each alone",
                            len(batch), type(exc).__name__, writable(str(exc)))
                for item in batch:
                    await self._answer([item])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(answer)


def staff_lists(models: list[str]) -> StaffLists:
    """The staff page's reader of the latest scores, with every config its names come from."""
    from core.specs import model_names
    from features.catalog import SERVICES
    from features.retrieval import model_feature_names
    from features.settings import load_features_config
    from serving.actions import load_actions_config, load_tags_config
    from serving.config import load_staff_page_config
    from training.reasons import load_templates

    actions, templates = load_actions_config(), load_templates()
    features = [f for service in SERVICES for f in model_feature_names(service)]
    vocab = vocabulary(actions, load_tags_config(), load_features_config(), templates, model_names(), features)
    return StaffLists(vocab, templates, load_staff_page_config(), list(models), actions.scoring.lang)


# ---------------------------------------------------------------------------------------------- routes
def _service() -> PropensityService | None:
    try:
        return bentoml.get_current_service()
    except bentoml.exceptions.BentoMLException:  # not instantiated yet (start-up)
        return None


def _error(exc: ServingError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _guarded(request: Request, handler) -> Response:
    """Auth first (401 before the body is even read), then the handler; ServingError -> its status."""
    svc = _service()
    if svc is None:
        return JSONResponse({"error": "service is starting"}, status_code=503)
    try:
        check_api_key(request.headers.get("x-api-key"), svc.api_key, allow_open=svc.config.allow_no_api_key)
        return await handler(svc)
    except ServingError as exc:
        return _error(exc)
    except Exception:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": "internal error; see the service log"}, status_code=500)


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with a 413 as soon as it passes ``limit`` bytes: by its Content-Length
    before reading anything, else while streaming (chunked), so a huge body is never held in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"(body): {declared} bytes, the maximum is {limit}", field="(body)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"(body): over {limit} bytes, the maximum", field="(body)")
        chunks.append(chunk)
    return b"".join(chunks)


async def _parsed(request: Request, svc: PropensityService, kind: type) -> Any:
    # Every check of the body happens here, before the request joins a batch: a bad one gets its own
    # 413 / 422 and never reaches the requests scored with it.
    raw = await _body(request, svc.config.max_body_bytes)
    return parse_request(decode_json(raw, svc.config.max_body_bytes), kind, svc.config, svc.registry.names)


async def predict(request: Request) -> Response:
    async def handle(svc: PropensityService) -> Response:
        return JSONResponse(await svc.batcher.submit(await _parsed(request, svc, PredictRequest)))

    return await _guarded(request, handle)


async def predict_features(request: Request) -> Response:
    async def handle(svc: PropensityService) -> Response:
        body = await _parsed(request, svc, PredictFeaturesRequest)
        return JSONResponse(await asyncio.to_thread(svc.predictor.predict_features, body))

    return await _guarded(request, handle)


async def flagged(request: Request) -> Response:
    """One page of the follow-up list: ?queue&action&segment&stage&tag&q&page&page_size&lang (400 on a
    bad one, naming it)."""
    async def handle(svc: PropensityService) -> Response:
        return JSONResponse(await asyncio.to_thread(svc.flagged_customers, request.query_params.multi_items()))

    return await _guarded(request, handle)


async def ui_customer(request: Request) -> Response:
    """One customer of the latest scores with the reasons by cause: ?id&lang (found: false when not scored)."""
    async def handle(svc: PropensityService) -> Response:
        return JSONResponse(await asyncio.to_thread(svc.staff_customer, request.query_params.multi_items()))

    return await _guarded(request, handle)


async def ui_labels(request: Request) -> Response:
    """Display names in ?lang (open: the page needs them before the key is entered; they hold no data)."""
    svc = _service()
    if svc is None:
        return JSONResponse({"error": "service is starting"}, status_code=503)
    try:
        return JSONResponse(svc.staff_labels(request.query_params.multi_items()))
    except ServingError as exc:
        return _error(exc)


async def ui_page(_: Request) -> Response:
    return FileResponse(UI_DIR / "index.html", media_type="text/html; charset=utf-8")


api = Starlette(
    routes=[
        Route("/predict", predict, methods=["POST"]),
        Route("/predict_features", predict_features, methods=["POST"]),
        Route("/ui", ui_page, methods=["GET"]),
        Route("/ui/", ui_page, methods=["GET"]),
        Route("/ui/api/flagged", flagged, methods=["GET"]),
        Route("/ui/api/customer", ui_customer, methods=["GET"]),
        Route("/ui/labels", ui_labels, methods=["GET"]),
    ]
)

# ---------------------------------------------------------------------------------------------- edge
GET = ("GET", "HEAD")
# Every path the server answers, with its methods: ours, the health probes, /metrics, this document, and
# BentoML's Swagger page (/ and its static files, which read /docs.json). Anything else is a 404 here.
ROUTES: dict[str, tuple[str, ...]] = {
    "/predict": ("POST",),
    "/predict_features": ("POST",),
    "/ui": GET,
    "/ui/": GET,
    "/ui/api/flagged": GET,
    "/ui/api/customer": GET,
    "/ui/labels": GET,
    "/healthz": GET,
    "/readyz": GET,
    "/livez": GET,
    "/metrics": GET,
    "/docs.json": GET,
    "/": GET,
}
STATIC_PREFIX = "/static_content/"


def _route(path: str) -> str:
    """The metrics label of ``path``: a known route, the static bucket, or the one unknown bucket."""
    if path in ROUTES:
        return path
    if path.startswith(STATIC_PREFIX):
        return STATIC_PREFIX + "*"
    return UNKNOWN_ROUTE


class EdgeMiddleware:
    """The first of our middlewares, for every HTTP request: unknown paths are a 404 and known paths
    with another method a 405 (answered here, before BentoML's routing: TRACE or POST on /healthz used
    to be a 200), the probes and /docs.json are answered here, and every request is counted in
    ``serving.metrics`` under its route, never its raw path."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        route = _route(path)
        start = time.perf_counter()
        status = 500

        async def counted_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with metrics.in_progress(route):
            try:
                response = await self._answer(path, method, route)
                if response is not None:
                    await response(scope, receive, counted_send)
                else:
                    await self.app(scope, receive, counted_send)
            finally:
                metrics.observe(route, status, time.perf_counter() - start)

    async def _answer(self, path: str, method: str, route: str) -> Response | None:
        """The response for what this middleware answers itself; None to pass the request on."""
        if route == UNKNOWN_ROUTE:
            return JSONResponse({"error": "not found"}, status_code=404)
        allowed = ROUTES.get(path, GET)
        if method not in allowed:
            return JSONResponse({"error": f"method {method} not allowed; use {', '.join(allowed)}"},
                                status_code=405, headers={"Allow": ", ".join(allowed)})
        if path == "/metrics":
            return Response(await asyncio.to_thread(metrics.render), media_type=metrics.CONTENT_TYPE)
        if path not in ("/healthz", "/readyz", "/docs.json"):
            return None
        svc = _service()
        if svc is None:  # not initialised yet
            return JSONResponse({"status": "starting"}, status_code=503)
        if path == "/healthz":
            current = svc.registry.current
            return JSONResponse({"status": "alive", "models": current.versions() if current else {}})
        if path == "/docs.json":
            return JSONResponse(svc.openapi())
        ready, body = await asyncio.to_thread(svc.readiness)
        return JSONResponse({"status": "ready" if ready else "not ready", **body}, status_code=200 if ready else 503)


@bentoml.service(
    name="propensity",
    workers=int(os.environ.get(WORKERS_ENV, "1")),
    traffic={"timeout": 30},
    logging={"access": {"enabled": False}},
    # BentoML's OpenTelemetry middleware does its per-request work even though tracing samples nothing by
    # default (sample_rate 0); the scoring routes skip it (with Prometheus metrics also off, one-client
    # p50 went from about 2.6 to 2.3 ms; metrics stay on).
    tracing={"excluded_urls": ["/predict"]},  # a pattern: matches /predict_features too
    # BentoML's HTTP metrics label requests by raw path (unbounded series); serving.metrics replaces them.
    metrics={"enabled": False},
)
@bentoml.asgi_app(api, path="/")
class PropensityService:
    """Loads models:/<name>@champion for every served model and follows the alias while running."""

    def __init__(self) -> None:
        self.config = load_serving_config()
        self.api_key = self.config.resolved_api_key()
        if self.api_key is None and not self.config.allow_no_api_key:
            log.warning("no API key configured (serving.yaml api_key or PROPENSITY_API_KEY): data calls get 401 "
                        "and /readyz says not ready")
        elif self.api_key is None:
            log.warning("no API key configured and allow_no_api_key: true: the data routes are open to anyone")
        self.registry = ModelRegistry(served_models(self.config), alias=self.config.alias)
        if not self.registry.refresh():
            log.error("models not loaded at start-up: %s (retrying every %ss)", self.registry.last_error,
                      self.config.reload_poll_seconds)
        self.predictor = Predictor(self.config, self.registry)
        self.batcher = MicroBatcher(self.predictor, self.config.max_batch_size)
        self.forgotten = ForgottenIds()
        self.apply_forgotten()
        self.registry.start_polling(self.config.reload_poll_seconds, also=[self.apply_forgotten])
        self.staff = staff_lists(self.registry.names)
        self._openapi: tuple[tuple, dict[str, Any]] | None = None

    def apply_forgotten(self) -> None:
        """Drop customers `propensity forget` recorded since the last look (run on every poll)."""
        if self.forgotten.refresh():
            dropped = self.predictor.recent.forget(self.forgotten.hashes)
            log.info("forgotten customers: %d on record, %d dropped from recent calls", len(self.forgotten.hashes),
                     dropped)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """The predictor's readiness, and not ready without an API key unless explicitly run open: a
        service nobody can call is not ready to take traffic."""
        ready, body = self.predictor.readiness()
        if self.api_key is not None:
            body["auth"] = "ok"
        elif self.config.allow_no_api_key:
            body["auth"] = "open: no API key and allow_no_api_key is true"
        else:
            body["auth"] = NO_KEY
            ready = False
        return ready, body

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document for the models loaded now (rebuilt when they change)."""
        current = self.registry.current
        key = tuple(sorted(current.versions().items())) if current else ()
        if self._openapi is None or self._openapi[0] != key:
            features = list(dict.fromkeys(f for m in current.models.values() for f in m.feature_names)) if current else []
            from serving.staff import filter_choices

            self._openapi = (key, openapi_document(self.config, self.registry.names, features,
                                                   staff_choices=filter_choices(self.staff.vocab),
                                                   max_page_size=self.staff.config.max_page_size))
        return self._openapi[1]

    def __is_ready__(self) -> bool:
        return self.readiness()[0]

    @bentoml.on_shutdown
    def stop_polling(self) -> None:
        self.registry.stop()
        metrics.process_exit()

    def flagged_customers(self, params: list[tuple[str, str]]) -> dict[str, Any]:
        """One page of the staff list (serving.staff) and the newest recent API calls, compact."""
        from serving.staff import parse_list_query

        query = parse_list_query(params, self.staff.vocab, self.staff.config, self.config.default_lang)
        page = self.staff.page(query)
        # Recent API calls (at most ui_recent_calls): who was looked up lately, id and decision only.
        page["recent"] = [
            {"customer_id": r["customer_id"], "seen_at": r.get("seen_at"),
             "action_rule": (r.get("decision") or {}).get("action_rule"),
             "queue": (r.get("decision") or {}).get("queue")}
            for r in self.predictor.recent.list()
        ]
        return page

    def staff_customer(self, params: list[tuple[str, str]]) -> dict[str, Any]:
        from serving.staff import parse_customer_query

        customer_id, lang = parse_customer_query(params, self.config.default_lang)
        return self.staff.customer(customer_id, lang)

    def staff_labels(self, params: list[tuple[str, str]]) -> dict[str, Any]:
        from serving.staff import filter_choices, labels, parse_labels_query

        lang = parse_labels_query(params, self.config.default_lang)
        return {"lang": lang, "labels": labels(self.staff.config, self.staff.vocab, lang),
                "choices": filter_choices(self.staff.vocab), "page_size": self.staff.config.page_size,
                "max_page_size": self.staff.config.max_page_size}


PropensityService.add_asgi_middleware(EdgeMiddleware)
