"""Errors of the service, each carrying the HTTP status it maps to (``ServingError.status``): 401 no /
wrong API key, 413 batch or body over the limit, 422 malformed body (the message names the field), 503
online store or models unavailable. Also the API key check."""

from __future__ import annotations

from typing import Any

from core.errors import PropensityError
from serving.config import API_KEY_ENV


class ServingError(PropensityError):
    status = 400

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": str(self)}
        if self.field is not None:
            out["field"] = self.field
        return out


class Unauthorized(ServingError):
    status = 401


class PayloadTooLarge(ServingError):
    status = 413


class InvalidRequest(ServingError):
    status = 422


class StoreUnavailable(ServingError):
    status = 503


class ModelsUnavailable(ServingError):
    status = 503


def check_api_key(given: str | None, expected: str | None) -> None:
    import hmac

    if expected is None:
        raise Unauthorized(f"no API key configured: set api_key in configs/serving.yaml or {API_KEY_ENV}")
    if not given:
        raise Unauthorized("missing X-API-Key header")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("wrong API key (X-API-Key header)")
