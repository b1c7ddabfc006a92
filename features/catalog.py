"""The feature catalogue as plain data: view names, feature names and types, service contents.

Kept free of Feast imports so that training and serving can ask for feature names without paying
Feast's 5 s import. ``definitions.py`` builds the Feast objects from these lists, so the names exist in
exactly one place (docs/internals.md, "Features").

Every stored feature is numeric. Counts are Int64 and amounts Float64; the "... at" features (last_*,
first_*, signup_at) are unix timestamps in seconds (Int64). Day counts are *not* stored: they are derived at retrieval time for the
date asked for (``features.derived``).
"""

from __future__ import annotations

from dataclasses import dataclass

INT = "int64"
FLOAT = "float64"
UNIX_TS = "unix_ts"  # Int64 seconds since the epoch; not a model input (the day counts derived from it are)

ENTITY = "customer"
JOIN_KEY = "customer_id"
TIMESTAMP_FIELD = "event_timestamp"


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: str
    description: str
    # False: stored for a derivation (features.derived), never a model input itself.
    model_input: bool = True


@dataclass(frozen=True)
class ViewSpec:
    name: str
    family: str  # the event table the view is computed from ("orders", "page_views", ...)
    description: str
    features: tuple[FeatureSpec, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]


RECENCY = ViewSpec(
    "customer_recency",
    family="mixed",
    description="When the customer last ordered, visited, complained and viewed a product; signup time.",
    features=(
        FeatureSpec("last_order_at", UNIX_TS, "Time of the last order before the snapshot (unix s)."),
        FeatureSpec("last_visit_at", UNIX_TS, "Time of the last page view before the snapshot (unix s)."),
        FeatureSpec("last_complaint_at", UNIX_TS, "Time the last complaint was opened (unix s)."),
        FeatureSpec("last_product_view_at", UNIX_TS, "Time of the last product page view (unix s)."),
        FeatureSpec("signup_at", UNIX_TS, "Signup time; first event when no customers file (unix s)."),
    ),
)
FREQUENCY = ViewSpec(
    "customer_frequency",
    family="orders",
    description="Orders and spend over 7/30/90/365 days, active days, average order value and trend.",
    features=(
        FeatureSpec("orders_7d", INT, "Orders in the 7 days before the snapshot."),
        FeatureSpec("orders_30d", INT, "Orders in the 30 days before the snapshot."),
        FeatureSpec("orders_90d", INT, "Orders in the 90 days before the snapshot."),
        FeatureSpec("orders_365d", INT, "Orders in the 365 days before the snapshot."),
        FeatureSpec("spend_7d", FLOAT, "Order amount summed over 7 days."),
        FeatureSpec("spend_30d", FLOAT, "Order amount summed over 30 days."),
        FeatureSpec("spend_90d", FLOAT, "Order amount summed over 90 days."),
        FeatureSpec("spend_365d", FLOAT, "Order amount summed over 365 days."),
        FeatureSpec("active_days_90d", INT, "Distinct UTC days with an order or a page view, last 90 days."),
        FeatureSpec("avg_order_value_365d", FLOAT, "spend_365d / orders_365d; null without orders."),
        FeatureSpec("orders_prev_30d", INT, "Orders in days 31-60 before the snapshot."),
        FeatureSpec(
            "orders_trend_30d",
            FLOAT,
            "(orders_30d - orders_prev_30d) / (orders_30d + orders_prev_30d); null when both are 0.",
        ),
    ),
)
BROWSE = ViewSpec(
    "customer_browse",
    family="page_views",
    description="Sessions, page views and browse depth over 7/30 days; product and cart interest.",
    features=(
        FeatureSpec("sessions_7d", INT, "Distinct sessions with a page view in the last 7 days."),
        FeatureSpec("sessions_30d", INT, "Distinct sessions in the last 30 days."),
        FeatureSpec("page_views_7d", INT, "Page views in the last 7 days."),
        FeatureSpec("page_views_30d", INT, "Page views in the last 30 days."),
        FeatureSpec("pages_per_session_7d", FLOAT, "page_views_7d / sessions_7d; null without sessions."),
        FeatureSpec("pages_per_session_30d", FLOAT, "page_views_30d / sessions_30d; null without sessions."),
        FeatureSpec("max_session_depth_30d", INT, "Page views of the deepest session in the last 30 days."),
        FeatureSpec("product_views_30d", INT, "Product page views in the last 30 days."),
        FeatureSpec("cart_views_30d", INT, "Cart page views in the last 30 days."),
        FeatureSpec(
            "abandoned_carts_30d",
            INT,
            "Sessions of the last 30 days with a cart view and no order within 24 h after the session.",
        ),
    ),
)
COMPLAINTS = ViewSpec(
    "customer_complaints",
    family="complaints",
    description="Complaints over 30/90 days, open now, high severity, median time to resolve.",
    features=(
        FeatureSpec("complaints_30d", INT, "Complaints opened in the last 30 days."),
        FeatureSpec("complaints_90d", INT, "Complaints opened in the last 90 days."),
        FeatureSpec("open_complaints", INT, "Complaints opened before the snapshot and not resolved by then."),
        FeatureSpec("high_severity_complaints_90d", INT, "Complaints of severity 3 in the last 90 days."),
        FeatureSpec(
            "median_resolution_days_365d",
            FLOAT,
            "Median days from opening to resolution, complaints resolved in the last 365 days.",
        ),
    ),
)

CADENCE = ViewSpec(
    "customer_cadence",
    family="mixed",
    description="The customer's own rhythm: lifetime orders, spend and sessions, first order and visit, "
    "mean and spread of the gaps between orders and between visit days.",
    features=(
        FeatureSpec("lifetime_orders", INT, "Orders before the snapshot, all history."),
        FeatureSpec(
            "lifetime_spend",
            FLOAT,
            "Order amount summed over all history; null when an order before the snapshot has no amount "
            "(every order of a log without amounts).",
        ),
        FeatureSpec("first_order_at", UNIX_TS, "Time of the first order (unix s); null without orders."),
        FeatureSpec(
            "orders_mean_gap_days",
            FLOAT,
            "Mean days between consecutive orders, (last - first order) / (orders - 1); null below 2 orders.",
        ),
        FeatureSpec(
            "orders_gap_std_days",
            FLOAT,
            "Sample standard deviation of the days between consecutive orders; null below 3 orders.",
        ),
        FeatureSpec("lifetime_sessions", INT, "Distinct sessions with a page view before the snapshot."),
        FeatureSpec("first_visit_at", UNIX_TS, "Time of the first page view (unix s); null without visits."),
        FeatureSpec(
            "visit_mean_gap_days",
            FLOAT,
            "Mean days between consecutive UTC days with a page view, (last - first visit day) / "
            "(visit days - 1); null below 2 visit days.",
        ),
    ),
)

# A BG/NBD model (features.btyd) fitted at every snapshot on every customer's orders before it; its four
# parameters are stored with each row so that P(alive), the expected orders and P(no order) are derived
# for the date asked for, like the day counts (features.derived: btyd_p_alive, btyd_expected_orders,
# btyd_p_no_order).
_BTYD_PARAM = "Parameter {} of the snapshot's BG/NBD fit (the same for every customer of a snapshot); null " \
    "when the history could not be fitted."
RHYTHM = ViewSpec(
    "customer_rhythm",
    family="orders",
    description="The customer's buying rhythm read through a BG/NBD model fitted on the orders before the "
    "snapshot: the repeat buying days, and the model's parameters.",
    features=(
        FeatureSpec("order_days", INT, "Distinct UTC days with an order before the snapshot, all history."),
        FeatureSpec("btyd_r", FLOAT, _BTYD_PARAM.format("r"), model_input=False),
        FeatureSpec("btyd_alpha", FLOAT, _BTYD_PARAM.format("alpha (days)"), model_input=False),
        FeatureSpec("btyd_a", FLOAT, _BTYD_PARAM.format("a"), model_input=False),
        FeatureSpec("btyd_b", FLOAT, _BTYD_PARAM.format("b"), model_input=False),
    ),
)

# A Gamma-Gamma model (features.btyd) of the value per buying day, fitted at every snapshot like BG/NBD
# above; with BG/NBD's expected order days it gives the spend expected (features.derived:
# btyd_expected_spend), the classic BG/NBD x Gamma-Gamma value a value model can start from.
_GG_PARAM = "Parameter {} of the snapshot's Gamma-Gamma fit (the same for every customer of a snapshot); " \
    "null when the history could not be fitted or orders carry no amounts."
SPEND_RHYTHM = ViewSpec(
    "customer_spend_rhythm",
    family="orders",
    description="The customer's value per buying day read through a Gamma-Gamma model fitted on the orders "
    "before the snapshot: the mean spend of the repeat buying days, and the model's parameters.",
    features=(
        FeatureSpec(
            "repeat_day_mean_spend",
            FLOAT,
            "Mean spend per UTC day with an order, the first such day left out (Gamma-Gamma's input); null "
            "below 2 order days or without amounts.",
        ),
        FeatureSpec("gg_p", FLOAT, _GG_PARAM.format("p"), model_input=False),
        FeatureSpec("gg_q", FLOAT, _GG_PARAM.format("q"), model_input=False),
        FeatureSpec("gg_gamma", FLOAT, _GG_PARAM.format("gamma (money)"), model_input=False),
    ),
)

# The same BG/NBD model fitted on the days with a page view (issue 11: "the same for page views where they
# exist"): whether the customer still uses the shop at all, read from their own visit rhythm; services
# churn_v3 and conversion_v2 have it (features.derived: btyd_visit_p_alive, btyd_expected_visit_days).
_VISIT_PARAM = "Parameter {} of the snapshot's BG/NBD fit on visit days (the same for every customer of a " \
    "snapshot); null when the history could not be fitted or there are no page views."
VISIT_RHYTHM = ViewSpec(
    "customer_visit_rhythm",
    family="page_views",
    description="The customer's visit rhythm read through a BG/NBD model fitted on the days with a page view "
    "before the snapshot: the visit days, and the model's parameters.",
    features=(
        FeatureSpec("visit_days", INT, "Distinct UTC days with a page view before the snapshot, all history."),
        FeatureSpec("btyd_visit_r", FLOAT, _VISIT_PARAM.format("r"), model_input=False),
        FeatureSpec("btyd_visit_alpha", FLOAT, _VISIT_PARAM.format("alpha (days)"), model_input=False),
        FeatureSpec("btyd_visit_a", FLOAT, _VISIT_PARAM.format("a"), model_input=False),
        FeatureSpec("btyd_visit_b", FLOAT, _VISIT_PARAM.format("b"), model_input=False),
    ),
)

VIEWS: dict[str, ViewSpec] = {v.name: v for v in (RECENCY, FREQUENCY, BROWSE, COMPLAINTS, CADENCE, RHYTHM,
                                                  SPEND_RHYTHM, VISIT_RHYTHM)}

# One service per model version; both training (historical) and serving (online) read through it.
SERVICES: dict[str, tuple[str, ...]] = {
    "churn_v1": (RECENCY.name, FREQUENCY.name, BROWSE.name, COMPLAINTS.name, CADENCE.name),
    "conversion_v1": (RECENCY.name, FREQUENCY.name, BROWSE.name, CADENCE.name),
    # v2: v1 and the BG/NBD reading of the customer's buying rhythm (churn and value read it).
    "churn_v2": (RECENCY.name, FREQUENCY.name, BROWSE.name, COMPLAINTS.name, CADENCE.name, RHYTHM.name),
    # The value model's own: churn_v2 and the Gamma-Gamma reading of the value per buying day.
    "value_v1": (RECENCY.name, FREQUENCY.name, BROWSE.name, COMPLAINTS.name, CADENCE.name, RHYTHM.name,
                 SPEND_RHYTHM.name),
    # v3 (churn) and v2 (conversion): the buying rhythm and the visit rhythm, both read through BG/NBD.
    "churn_v3": (RECENCY.name, FREQUENCY.name, BROWSE.name, COMPLAINTS.name, CADENCE.name, RHYTHM.name,
                 VISIT_RHYTHM.name),
    "conversion_v2": (RECENCY.name, FREQUENCY.name, BROWSE.name, CADENCE.name, RHYTHM.name, VISIT_RHYTHM.name),
}

# Derived at retrieval time by features.derived.add_derived (numeric ones are model inputs).
DERIVED_NUMERIC: tuple[str, ...] = (
    "days_since_last_order",
    "days_since_last_visit",
    "days_since_last_complaint",
    "days_since_last_product_view",
    "tenure_days",
    "r_score",
    "f_score",
    "m_score",
    "days_since_first_order",
    "days_since_first_visit",
    "gap_ratio",
    "visit_gap_ratio",
    "btyd_p_alive",
    "btyd_expected_orders",
    "btyd_p_no_order",
    "btyd_expected_spend",
    "btyd_visit_p_alive",
    "btyd_expected_visit_days",
)
DERIVED_STRING: tuple[str, ...] = ("rfm_segment", "lifecycle_stage")
# Derived features computed from one view's stored inputs: model inputs only of the services with it.
# (btyd_expected_spend reads both fits; every service with the spend view has the rhythm view too.)
DERIVED_FROM_VIEW: dict[str, str] = {
    **{name: RHYTHM.name for name in ("btyd_p_alive", "btyd_expected_orders", "btyd_p_no_order")},
    "btyd_expected_spend": SPEND_RHYTHM.name,
    **{name: VISIT_RHYTHM.name for name in ("btyd_visit_p_alive", "btyd_expected_visit_days")},
}


def service_views(service: str) -> tuple[str, ...]:
    """The views a feature service reads; a clear error for an unknown service name."""
    from core.errors import PropensityError

    try:
        return SERVICES[service]
    except KeyError:
        raise PropensityError(
            f"unknown feature service {service!r}; known: {', '.join(sorted(SERVICES))}"
        ) from None


def service_raw_features(service: str) -> list[str]:
    """Stored features of a service, in view order then catalogue order (timestamps included)."""
    return [name for view in service_views(service) for name in VIEWS[view].names]


def stored_kind(feature: str) -> str:
    for view in VIEWS.values():
        for f in view.features:
            if f.name == feature:
                return f.kind
    raise KeyError(feature)
