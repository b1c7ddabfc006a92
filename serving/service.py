"""The BentoML 1.4 prediction service: `bentoml serve serving.service:PropensityService`
(what `propensity serve` runs).

Routes (a Starlette app mounted into the BentoML service, so status codes are ours to choose):
- POST /predict           {customer_ids, models?, top_k?, lang?}: features from the Feast online store
- POST /predict_features  {rows: [{feature: value, ...}], models?, top_k?, lang?}: caller's features
- GET  /healthz           alive, with the model versions in the body (open, no key)
- GET  /readyz            200 only with both models loaded and the online store answering, else 503
- GET  /ui                the staff page; its data comes from GET /ui/api/flagged (key required)

Data routes need the X-API-Key header (401 without). The request logic lives in serving.config,
serving.errors, serving.requests, serving.registry and serving.predictor (no HTTP there).

Speed: concurrent /predict calls are batched in-process (``MicroBatcher``): while one batch is being
scored in a worker thread, new requests queue, and the next batch takes them all, so one feature look-up
and one LightGBM call serve many requests at load while a lone request never waits for a timer.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from serving.config import WORKERS_ENV, load_serving_config, served_models
from serving.errors import ServingError, check_api_key
from serving.predictor import Predictor
from serving.registry import ModelRegistry
from serving.requests import PredictFeaturesRequest, PredictRequest, decode_json, parse_request

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
                batch = self._take()
                requests = [r for r, _ in batch]
                try:
                    answers = await asyncio.to_thread(self.predictor.predict_many, requests)
                except Exception as exc:  # one failure (e.g. store down) answers every request of the batch
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), answer in zip(batch, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
        finally:
            self._draining = False


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
        check_api_key(request.headers.get("x-api-key"), svc.api_key)
        return await handler(svc)
    except ServingError as exc:
        return _error(exc)
    except Exception:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": "internal error; see the service log"}, status_code=500)


async def predict(request: Request) -> Response:
    async def handle(svc: PropensityService) -> Response:
        body = parse_request(decode_json(await request.body()), PredictRequest, svc.config, svc.registry.names)
        return JSONResponse(await svc.batcher.submit(body))

    return await _guarded(request, handle)


async def predict_features(request: Request) -> Response:
    async def handle(svc: PropensityService) -> Response:
        body = parse_request(
            decode_json(await request.body()), PredictFeaturesRequest, svc.config, svc.registry.names
        )
        return JSONResponse(await asyncio.to_thread(svc.predictor.predict_features, body))

    return await _guarded(request, handle)


async def flagged(request: Request) -> Response:
    async def handle(svc: PropensityService) -> Response:
        return JSONResponse(await asyncio.to_thread(svc.flagged_customers))

    return await _guarded(request, handle)


async def ui_page(_: Request) -> Response:
    return FileResponse(UI_DIR / "index.html", media_type="text/html; charset=utf-8")


api = Starlette(
    routes=[
        Route("/predict", predict, methods=["POST"]),
        Route("/predict_features", predict_features, methods=["POST"]),
        Route("/ui", ui_page, methods=["GET"]),
        Route("/ui/", ui_page, methods=["GET"]),
        Route("/ui/api/flagged", flagged, methods=["GET"]),
    ]
)


class HealthMiddleware:
    """Answers /healthz and /readyz before BentoML's own probes (which return an empty body): ours carry
    the model versions and say why the service is not ready."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path not in ("/healthz", "/readyz"):
            await self.app(scope, receive, send)
            return
        svc = _service()
        if svc is None:  # not initialised yet
            response: Response = JSONResponse({"status": "starting"}, status_code=503)
        elif path == "/healthz":
            current = svc.predictor.registry.current
            response = JSONResponse({"status": "alive", "models": current.versions() if current else {}})
        else:
            ready, body = await asyncio.to_thread(svc.predictor.readiness)
            response = JSONResponse({"status": "ready" if ready else "not ready", **body}, status_code=200 if ready else 503)
        await response(scope, receive, send)


@bentoml.service(
    name="propensity",
    workers=int(os.environ.get(WORKERS_ENV, "1")),
    traffic={"timeout": 30},
    logging={"access": {"enabled": False}},
    # BentoML's OpenTelemetry middleware does its per-request work even though tracing samples nothing by
    # default (sample_rate 0); the scoring routes skip it (with Prometheus metrics also off, one-client
    # p50 went from about 2.6 to 2.3 ms; metrics stay on).
    tracing={"excluded_urls": ["/predict"]},  # a pattern: matches /predict_features too
)
@bentoml.asgi_app(api, path="/")
class PropensityService:
    """Loads models:/<name>@champion for every served model and follows the alias while running."""

    def __init__(self) -> None:
        self.config = load_serving_config()
        self.api_key = self.config.resolved_api_key()
        if self.api_key is None:
            log.warning("no API key configured (serving.yaml api_key or PROPENSITY_API_KEY): data calls get 401")
        self.registry = ModelRegistry(served_models(self.config), alias=self.config.alias)
        if not self.registry.refresh():
            log.error("models not loaded at start-up: %s (retrying every %ss)", self.registry.last_error,
                      self.config.reload_poll_seconds)
        self.registry.start_polling(self.config.reload_poll_seconds)
        self.predictor = Predictor(self.config, self.registry)
        self.batcher = MicroBatcher(self.predictor, self.config.max_batch_size)
        self._scores_cache: tuple[float, list[dict[str, Any]]] | None = None

    def __is_ready__(self) -> bool:
        return self.predictor.readiness()[0]

    @bentoml.on_shutdown
    def stop_polling(self) -> None:
        self.registry.stop()

    def flagged_customers(self) -> dict[str, Any]:
        """Flagged customers for the staff page: latest batch scores plus recent API calls."""
        return {"models": self.predictor.registry.names, "scores": self._latest_scores(),
                "recent": self.predictor.recent.list()}

    def _latest_scores(self, limit: int = 500) -> list[dict[str, Any]]:
        import json

        import numpy as np
        import pandas as pd

        from core.settings import project_paths

        path = project_paths().latest_scores
        if not path.exists():
            return []
        mtime = path.stat().st_mtime
        if self._scores_cache and self._scores_cache[0] == mtime:
            return self._scores_cache[1]
        frame = pd.read_parquet(path)
        models = [m for m in self.predictor.registry.names if f"{m}_band" in frame.columns]
        if not models:
            return []
        high = np.logical_or.reduce([frame[f"{m}_band"].eq("high").to_numpy() for m in models])
        # Most likely first, whichever model flagged the customer.
        top = frame[[f"{m}_probability" for m in models]].where(
            np.column_stack([frame[f"{m}_band"].eq("high") for m in models])).max(axis=1)
        frame = frame.assign(_top=top)[high].sort_values("_top", ascending=False).drop(columns="_top").head(limit)
        # NaN is not JSON; to_json handles it, then back to Python objects for the response.
        rows = json.loads(frame.to_json(orient="records", date_format="iso"))
        self._scores_cache = (mtime, rows)
        return rows


PropensityService.add_asgi_middleware(HealthMiddleware)
