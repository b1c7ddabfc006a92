"""Errors of the service, each carrying the HTTP status it maps to (``ServingError.status``): 401 no /
wrong API key, 413 batch or body over the limit, 422 malformed body (the message names the field), 503
online store or models unavailable. Also the API key check."""

from __future__ import annotations

from typing import Any

from core.errors import PropensityError
from serving.config import API_KEY_ENV


def writable(text: str) -> str:
    """``text`` with lone surrogates as backslash escapes: JSON can carry them (``"\\ud800"``) but UTF-8
    cannot, and an error message quoting a client's key must still encode into its own response."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ServingError(PropensityError):
    status = 400
    # True when the cause is the same for every request (store down, no models): the batcher then answers
    # the whole batch with it instead of retrying each request alone.
    shared = False

    def __init__(self, message: str, field: str | None = None):
        super().__init__(writable(message))
        self.field = None if field is None else writable(field)

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
    """Messages of 503s never carry server paths or the cause's text: that goes to the service log."""

    status = 503
    shared = True


class ModelsUnavailable(ServingError):
    status = 503
    shared = True


NO_KEY = f"no API key configured: set api_key in configs/serving.yaml or {API_KEY_ENV}"


def check_api_key(given: str | None, expected: str | None, allow_open: bool = False) -> None:
    """401 unless ``given`` is the key. With no key configured every call is refused, unless the service
    is explicitly run open (serving.yaml ``allow_no_api_key: true``)."""
    import hmac

    if expected is None:
        if allow_open:
            return
        raise Unauthorized(NO_KEY)
    if not given:
        raise Unauthorized("missing X-API-Key header")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("wrong API key (X-API-Key header)")
