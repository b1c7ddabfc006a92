"""Request bodies: the pydantic models of /predict and /predict_features, JSON decoding and validation
into them (413 for a batch over the maximum, 422 naming the first bad field)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serving.config import ServingConfig
from serving.errors import InvalidRequest, PayloadTooLarge


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] | None = Field(None, min_length=1, description="models to run; default all served")
    top_k: int | None = Field(None, ge=0, le=50, description="reasons per model; default from config")
    lang: Literal["en", "zh"] | None = Field(None, description="sentence language; default from config")


class PredictRequest(_Request):
    customer_ids: list[str] = Field(min_length=1)

    @field_validator("customer_ids")
    @classmethod
    def _non_empty_ids(cls, ids: list[str]) -> list[str]:
        for i, cid in enumerate(ids):
            if not cid.strip():
                raise ValueError(f"customer_ids[{i}] is empty")
        return ids


class PredictFeaturesRequest(_Request):
    rows: list[dict[str, float | int | str | None]] = Field(min_length=1)


def _validation_error(exc: ValidationError) -> InvalidRequest:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(body)"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return InvalidRequest(f"{loc}: {err['msg']}{more}", field=loc)


def parse_request(body: Any, kind: type[_Request], config: ServingConfig, served: Sequence[str]) -> Any:
    """Validate a decoded JSON body: 413 when the batch is too large (checked first, before the cost of
    validating it), 422 naming the first bad field, and a model the service does not serve is a 422."""
    if not isinstance(body, dict):
        raise InvalidRequest("(body): request body must be a JSON object", field="(body)")
    batch_field = "customer_ids" if kind is PredictRequest else "rows"
    batch = body.get(batch_field)
    if isinstance(batch, list) and len(batch) > config.max_batch_size:
        raise PayloadTooLarge(
            f"{batch_field}: {len(batch)} entries, the maximum per request is {config.max_batch_size}",
            field=batch_field,
        )
    try:
        request = kind.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    for i, name in enumerate(request.models or []):
        if name not in served:
            raise InvalidRequest(f"models.{i}: unknown model {name!r}; served: {', '.join(served)}", f"models.{i}")
    return request


def decode_json(raw: bytes) -> Any:
    import json

    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"(body): not valid JSON: {exc}", field="(body)") from None
