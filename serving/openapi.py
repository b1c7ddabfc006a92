"""The service's OpenAPI 3.1 document, served at /docs.json (and so in BentoML's Swagger page at /).

BentoML documents only its own API methods; ours are a Starlette app mounted into the service, so its
document listed nothing but the health probes. This one is built from the pydantic request models (their
JSON Schema, with the served models, batch maximum and languages of this config filled in) and from
response models that mirror what the routes answer, so a client generator or a schema-driven test
(tests/serving/test_schemathesis.py) sees every route, status and field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.config import ServingConfig
from serving.requests import MAX_ID_LENGTH, PredictFeaturesRequest, PredictRequest

REF = "#/components/schemas/{model}"


# ---------------------------------------------------------------------------------------------- responses
# For the document only: the routes build plain dicts (cheaper than validating every answer), and these
# models say what those dicts hold; the schemathesis run checks real answers against them.
class Evidence(BaseModel):
    feature: str
    value: float | None
    contribution: float
    sentence: str


class Rose(BaseModel):
    date: str = Field(description="the end of the week the risk rose (YYYY-MM-DD)")
    before: float = Field(ge=0, le=1, description="the probability the week before")
    after: float = Field(ge=0, le=1, description="the probability that week")


class Reason(BaseModel):
    feature: str = Field(description="the cause's strongest fact")
    value: float | None
    contribution: float = Field(description="the cause's summed SHAP value (log-odds, or log amount)")
    direction: Literal["raises", "lowers"]
    sentence: str = Field(description="the cause's line: headline, direction, facts")
    cause: str = Field("", description="the cause (configs/reasons.yaml), e.g. complaints, inactivity")
    headline: str = ""
    evidence: list[Evidence] = Field(default_factory=list, description="the cause's strongest facts")
    rose: Rose | None = Field(None, description="on the top cause, when the customer's past shows the week "
                                                "the risk rose")


class ModelScore(BaseModel):
    probability: float | None = Field(None, ge=0, le=1, description="a binary model's calibrated probability")
    value: float | None = Field(None, ge=0, description="a regression model's amount (e.g. predicted spend)")
    band: Literal["high", "medium", "low"]
    model_version: str
    reasons: list[Reason]


class Decision(BaseModel):
    """The decision, from the same code as batch scoring (serving.actions.decide)."""

    as_of: str | None = Field(None, description="the date the features and decision are for (YYYY-MM-DD)")
    layer_activity: str | None = None
    layer_value: str | None = None
    layer_intent: str | None = None
    layer_risk: str | None = None
    tags: str | None = Field(None, description="every tag that holds, ';'-joined (configs/tags.yaml)")
    action: str | None = None
    queue: str | None = None
    action_rule: str | None = None
    group: str | None = Field(None, description="treatment, control or empty")
    priority: float | None = None
    queue_status: str | None = None
    top_cause: str | None = Field(None, description="the top raising cause of the model the rule explains "
                                                    "with, as in the batch list ('' without an action)")
    value: float | None = Field(None, description="the value model's predicted spend")
    value_at_risk: float | None = None
    value_upside: float | None = None


class CustomerResult(BaseModel):
    """One customer; for each requested model a ``ModelScore`` under the model's name."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, ModelScore] = Field(init=False)

    customer_id: str
    found: bool
    error: str | None = Field(None, description="only when found is false")
    rfm_segment: str | None = None
    lifecycle_stage: str | None = None
    decision: Decision | None = Field(None, description="what batch scoring decides for this customer, same code")


class PredictResponse(BaseModel):
    model_versions: dict[str, str]
    results: list[CustomerResult]


class Error(BaseModel):
    error: str
    field: str | None = Field(None, description="the offending field, e.g. customer_ids.0, rows.0.orders_30d")


class Health(BaseModel):
    status: Literal["alive", "starting"]
    models: dict[str, str] = {}


class Readiness(BaseModel):
    status: Literal["ready", "not ready", "starting"]
    models: dict[str, str] = Field({}, description="name -> version, or {error: ...} when not loaded")
    online_store: str | None = None
    auth: str | None = None


class Flagged(BaseModel):
    """One page of the follow-up list (serving.staff): the latest batch scores' rows in work queues."""

    models: list[str]
    filters: dict[str, str | None]
    page: int
    page_size: int
    lang: Literal["en", "zh"]
    as_of: str | None = Field(description="the scores' date; null without batch scores")
    queues: dict[str, int] = Field(description="customers per work queue (all filters but the queue ignored)")
    total: int = Field(ge=0, description="customers matching the filters")
    pages: int = Field(ge=0)
    rows: list[dict[str, Any]] = Field(description="customer_id, action_rule, queue, queue_status, priority, "
                                       "value_at_risk, segment, stage, tags, scores, headline {cause, evidence}")
    recent: list[dict[str, Any]] = Field(description="high-band customers of recent API calls, newest first (id, rule, queue)")


class StaffCustomer(BaseModel):
    models: list[str]
    lang: Literal["en", "zh"]
    found: bool = Field(description="false when the latest batch scores do not hold the customer")
    customer: dict[str, Any] | None = Field(description="the row of the list plus as_of, layers and causes (each "
                                            "with its facts: feature, value, contribution, direction, sentence)")
    error: str | None = Field(None, description="only when found is false")


class Labels(BaseModel):
    lang: Literal["en", "zh"]
    labels: dict[str, dict[str, str]] = Field(description="kind -> key -> display name")
    choices: dict[str, list[str]] = Field(description="the values each filter of the list accepts")
    page_size: int
    max_page_size: int


def _json(ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": REF.format(model=ref)}}}}


def _responses(ok: str, *errors: tuple[int, str]) -> dict[str, Any]:
    out = {"200": {"description": "OK", **_json(ok)}}
    for status, text in errors:
        out[str(status)] = {"description": text, **_json("Error")}
    return out


AUTH = (401, "no or wrong X-API-Key")


def _schemas(config: ServingConfig, served: Sequence[str], features: Sequence[str]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (PredictRequest, PredictFeaturesRequest, PredictResponse, Error, Health, Readiness, Flagged,
                  StaffCustomer, Labels):
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    for name in ("PredictRequest", "PredictFeaturesRequest"):
        props = schemas[name]["properties"]
        # This service's limits and choices, so generated clients and tests stay inside them.
        props["models"]["anyOf"][0]["items"] = {"type": "string", "enum": list(served)}
    batch = schemas["PredictRequest"]["properties"]["customer_ids"]
    batch["maxItems"] = config.max_batch_size
    batch["items"]["maxLength"] = MAX_ID_LENGTH
    rows = schemas["PredictFeaturesRequest"]["properties"]["rows"]
    rows["maxItems"] = config.max_batch_size
    if features:
        # The features of the loaded models: a row with all of them suits any choice of `models` (each
        # row needs the features of the requested models; those of the other served models are ignored).
        rows["items"] = {
            "type": "object",
            "properties": {
                **{f: {"type": ["number", "null"]} for f in features},
                **{c: {"type": ["string", "null"]} for c in ("customer_id", "rfm_segment", "lifecycle_stage")},
            },
            "required": list(features),
            "additionalProperties": False,
        }
    return schemas


BAD_QUERY = (400, "a query parameter is unknown, repeated or out of range; `field` names it")
LANG = {"type": "string", "enum": ["en", "zh"]}


def _text() -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": r"\S"}


def _query(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _list_parameters(choices: dict[str, list[str]], max_page_size: int) -> list[dict[str, Any]]:
    """The list's filters (each one of this config's values; a filter with none is left out), the id
    search, paging and language."""
    from serving.staff import MAX_PAGE

    params = [_query(name, {"type": "string", "enum": list(values)}) for name, values in choices.items() if values]
    return [
        *params, _query("q", _text()),
        _query("page", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
        _query("page_size", {"type": "integer", "minimum": 1, "maximum": max_page_size}),
        _query("lang", LANG),
    ]


def openapi_document(
    config: ServingConfig, served: Sequence[str], features: Sequence[str] = (), version: str = "1",
    staff_choices: dict[str, list[str]] | None = None, max_page_size: int = 100,
) -> dict[str, Any]:
    """The document for this config and these served models; ``features``: the loaded models' feature
    names (rows of /predict_features), unknown while no model is loaded; ``staff_choices``: the values
    of the staff list's filters (serving.staff.filter_choices)."""
    too_large = (413, f"more than {config.max_batch_size} entries, or a body over {config.max_body_bytes} bytes")
    invalid = (422, "malformed body; `field` names the first bad field")
    unavailable = (503, "online store or models unavailable; retry shortly")
    secured = {"security": [{"ApiKey": []}]}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "propensity",
            "version": version,
            "description": "Each served model's probability (or amount) with SHAP reasons and the decision (docs/serving.md).",
        },
        "paths": {
            "/predict": {"post": {
                "summary": "Score customers from the online feature store",
                "operationId": "predict",
                **secured,
                "requestBody": {"required": True, **_json("PredictRequest")},
                "responses": _responses("PredictResponse", AUTH, too_large, invalid, unavailable),
            }},
            "/predict_features": {"post": {
                "summary": "Score feature values sent by the caller",
                "operationId": "predict_features",
                **secured,
                "requestBody": {"required": True, **_json("PredictFeaturesRequest")},
                "responses": _responses("PredictResponse", AUTH, too_large, invalid, unavailable),
            }},
            "/ui/api/flagged": {"get": {
                "summary": "One page of a queue's follow-up list, sorted by priority (the staff page)",
                "operationId": "flagged",
                **secured,
                "parameters": _list_parameters(staff_choices or {}, max_page_size),
                "responses": _responses("Flagged", AUTH, BAD_QUERY),
            }},
            "/ui/api/customer": {"get": {
                "summary": "One customer of the latest batch scores with the reasons by cause",
                "operationId": "staff_customer",
                **secured,
                "parameters": [_query("id", _text(), required=True), _query("lang", LANG)],
                "responses": _responses("StaffCustomer", AUTH, BAD_QUERY),
            }},
            "/ui/labels": {"get": {
                "summary": "Display names of the staff page in a language (no key needed)",
                "operationId": "staff_labels",
                "parameters": [_query("lang", LANG)],
                "responses": _responses("Labels", BAD_QUERY),
            }},
            "/healthz": {"get": {
                "summary": "Alive, with the served model versions (no key needed)",
                "operationId": "healthz",
                "responses": {**_responses("Health"), "503": {"description": "starting", **_json("Health")}},
            }},
            "/readyz": {"get": {
                "summary": "Ready: models loaded, online store answering, API key configured",
                "operationId": "readyz",
                "responses": {**_responses("Readiness"),
                              "503": {"description": "not ready; the body says why", **_json("Readiness")}},
            }},
        },
        "components": {
            "schemas": _schemas(config, served, features),
            "securitySchemes": {"ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }
