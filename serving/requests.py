"""Request bodies: the pydantic models of /predict and /predict_features, JSON decoding and validation
into them (413 for a batch over the maximum, 422 naming the first bad field)."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
)

from serving.config import ServingConfig
from serving.errors import InvalidRequest, PayloadTooLarge

# The deepest valid body is 3 levels (body -> rows -> row); anything far deeper is hostile. Checked on the
# decoded value; json itself raises RecursionError near 1000 levels, which is caught too.
MAX_JSON_DEPTH = 8
MAX_ID_LENGTH = 256
# float64 tops out near 1.8e308 (309 digits): a longer integer literal cannot be a finite feature value,
# and Python refuses to even parse one over 4300 digits (a ValueError deep inside json).
MAX_INT_DIGITS = 309


def _integral(value: Any) -> Any:
    # JSON Schema counts 3.0 as an integer (and so do JSON encoders that write every number as a double);
    # 3.5, true and "3" stay errors.
    return int(value) if isinstance(value, float) and value.is_integer() else value


class _Request(BaseModel):
    # strict: JSON true is not 1 and "3" is not 3; a client sending them has a bug it should hear about.
    model_config = ConfigDict(extra="forbid", strict=True)

    models: list[str] | None = Field(None, min_length=1, description="models to run; default all served")
    top_k: Annotated[int | None, BeforeValidator(_integral)] = Field(
        None, ge=0, le=50, description="reasons per model; default from config"
    )
    lang: Literal["en", "zh"] | None = Field(None, description="sentence language; default from config")


CustomerId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"\S")]


def _iso_date(value: Any) -> Any:
    # strict mode takes no string for a date; a date is sent as "YYYY-MM-DD" all the same.
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError("must be a date like 2024-05-06") from None
    return value


AsOf = Annotated[dt.date | None, BeforeValidator(_iso_date), WithJsonSchema({"type": ["string", "null"], "format": "date"})]


class PredictRequest(_Request):
    customer_ids: list[CustomerId] = Field(min_length=1, description="ids to look up in the online store")
    decision: bool = Field(
        True, description="also return the decision (layers, tags, action, queue, priority): about 17 ms per "
        "call on the demo data; false answers in the time of the scores alone"
    )
    as_of: AsOf = Field(
        None, ge=dt.date(1970, 1, 1),
        description="score as of this date (features exact for it); default: the online store's snapshot date",
    )


def _feature_value(value: Any) -> float | int | str | None:
    """A feature value as sent: a finite number or null (strings only for customer_id and the segment
    columns; Predictor.predict_features names a string where a model feature is expected)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number, a string or null")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond float64
        finite = False
    if not finite:
        raise ValueError("must be a finite number")
    return value


FeatureValue = Annotated[
    Any, PlainValidator(_feature_value), WithJsonSchema({"type": ["number", "string", "null"]})
]


class PredictFeaturesRequest(_Request):
    rows: list[dict[str, FeatureValue]] = Field(
        min_length=1, description="feature values per row; null = missing; customer_id and segments optional"
    )


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


class _BadNumber:
    """What the decoder puts where JSON held a number no float64 holds (NaN, Infinity, 1e999, a 400-digit
    integer): the walk in ``check_json`` then rejects it naming its field, which json's hooks cannot."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def _parse_float(text: str) -> float | _BadNumber:
    value = float(text)
    return value if math.isfinite(value) else _BadNumber(text)


def _parse_int(text: str) -> int | _BadNumber:
    return int(text) if len(text) <= MAX_INT_DIGITS else _BadNumber(text)


def _path(parts: tuple) -> str:
    return ".".join(str(p) for p in parts)


def _clean(value: Any, max_depth: int) -> bool:
    """The fast walk of ``check_json``: no paths kept, only whether anything needs naming."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and not _encodable(item):
                return False
        elif isinstance(item, list):
            if depth >= max_depth:
                return False
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, dict):
            if depth >= max_depth:
                return False
            for key, v in item.items():
                if not key.isascii() and not _encodable(key):
                    return False
                stack.append((v, depth + 1))
        elif isinstance(item, _BadNumber):
            return False
    return True


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_json(value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Reject, naming the field, what JSON can carry but the service cannot use: nesting deeper than
    ``max_depth``, strings that are not valid Unicode (lone surrogates such as ``"\\ud800"`` fail in every
    UTF-8 encoder downstream: store keys, response bodies, logs) and numbers beyond float64.

    Iterative, so a deep value cannot exhaust the stack here either. A clean body (nearly all) costs one
    walk without paths; only a bad one is walked again, in document order, to name its first bad field.
    """
    if _clean(value, max_depth):
        return
    stack: list[tuple[Any, tuple, int]] = [(value, (), 0)]
    while stack:
        item, parts, depth = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                field = _path(parts) or "(body)"
                raise InvalidRequest(f"{field}: not valid Unicode (lone surrogate)", field)
        elif isinstance(item, _BadNumber):
            field = _path(parts) or "(body)"
            shown = item.text if len(item.text) <= 24 else f"{item.text[:12]}...({len(item.text)} characters)"
            raise InvalidRequest(f"{field}: {shown} is not a finite number", field)
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise InvalidRequest(f"(body): nested deeper than {max_depth} levels", "(body)")
            if isinstance(item, list):
                stack.extend((item[i], (*parts, i), depth + 1) for i in range(len(item) - 1, -1, -1))
                continue
            for key, v in reversed(item.items()):
                if not _encodable(key):
                    field = _path((*parts, key))  # InvalidRequest escapes the surrogate
                    raise InvalidRequest(f"{field}: key is not valid Unicode (lone surrogate)", field)
                stack.append((v, (*parts, key), depth + 1))


# One decoder for all requests: json.loads with hooks builds a new one per call.
_DECODER = json.JSONDecoder(parse_float=_parse_float, parse_int=_parse_int, parse_constant=_BadNumber)


def decode_json(raw: bytes, max_bytes: int | None = None) -> Any:
    """The decoded body, checked by ``check_json``; 413 over ``max_bytes``, 422 for anything else amiss."""
    if max_bytes is not None and len(raw) > max_bytes:
        raise PayloadTooLarge(f"(body): {len(raw)} bytes, the maximum is {max_bytes}", field="(body)")
    try:
        # UTF-8 only (RFC 8259); json.loads would also guess UTF-16/32 from the first bytes.
        value = _DECODER.decode(raw.decode("utf-8") if raw else "null")
    except RecursionError:
        raise InvalidRequest(f"(body): nested deeper than {MAX_JSON_DEPTH} levels", field="(body)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"(body): not valid JSON: {exc}", field="(body)") from None
    check_json(value)
    return value
