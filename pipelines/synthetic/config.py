"""The generator's parameters: the schema of configs/generate.yaml (strict: unknown keys are errors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from core.config import StrictModel, config_path, load_config
from core.errors import ConfigError


class PopulationConfig(StrictModel):
    pre_window_share: float = Field(
        0.4, ge=0, le=1, description="share of customers who signed up before the window"
    )
    pre_window_max_days: int = Field(540, ge=1, description="oldest signup before the window, in days")
    activity_sigma: float = Field(0.6, gt=0, description="log-sd of the activity trait (median 1)")
    intent_sigma: float = Field(0.4, gt=0, description="log-sd of the intent trait (median 1)")
    value_median: float = Field(55.0, gt=0, description="median order value before price sensitivity")
    value_sigma: float = Field(0.5, gt=0)
    deep_browser_share: float = Field(
        0.5, ge=0, le=1, description="share who browse deep (others: short, frequent visits)"
    )
    offline_share: float = Field(0.3, ge=0, le=1, description="share who also order offline (store, phone)")
    offline_daily_rate: float = Field(0.006, ge=0, le=0.5)
    decliner_share: float = Field(
        0.3, ge=0, le=1, description="share whose activity starts to decline at some date"
    )
    decline_days_min: float = Field(40, gt=0, description="fastest decline: activity falls by e every N days")
    decline_days_max: float = Field(150, gt=0)
    decline_cap: float = Field(2.5, gt=0, description="largest log-drop of activity")
    complaint_prob_median: float = Field(
        0.06, ge=0, le=1, description="median chance that an order leads to a complaint"
    )


class FunnelConfig(StrictModel):
    entry_rate: float = Field(
        0.07, gt=0, le=1, description="daily idle -> interested chance at activity = intent = 1"
    )
    interested_to_product: float = Field(0.2, ge=0, le=1)
    interested_to_idle: float = Field(0.12, ge=0, le=1)
    product_to_cart: float = Field(0.35, ge=0, le=1)
    product_to_idle: float = Field(0.08, ge=0, le=1)
    cart_to_idle: float = Field(0.12, ge=0, le=1)
    visit: tuple[float, float, float, float] = Field(
        (0.012, 0.2, 0.35, 0.5), description="daily visit chance by stage (idle scaled by activity)"
    )
    shallow_visit_factor: float = Field(
        1.6, gt=0, description="short-visit browsers come back more often while interested"
    )
    purchase: tuple[float, float, float, float] = Field(
        (0.02, 0.04, 0.12, 0.6), description="chance a visit ends in an order, by stage"
    )
    churned_visit: float = Field(
        0.003, ge=0, le=1, description="daily visit chance of a churned customer (never buys)"
    )


class ChurnConfig(StrictModel):
    base_daily_hazard: float = Field(1 / 1000, gt=0, lt=1)
    low_engagement: float = Field(
        0.8, ge=0, description="log-hazard per unit of log(1/activity) below the median"
    )
    gap_per_30_days: float = Field(0.25, ge=0, description="log-hazard per 30 days since the last order")
    gap_cap_days: int = Field(240, ge=1)
    declining_activity: float = Field(0.9, ge=0, description="log-hazard per unit of log-drop in activity")
    complaint_30d: float = Field(
        1.0, ge=0, description="log-hazard per severity point opened in the last 30 days"
    )
    complaint_90d: float = Field(0.4, ge=0, description="... opened 30-90 days ago")
    open_complaint: float = Field(0.8, ge=0, description="log-hazard per severity point still unresolved")
    max_daily_hazard: float = Field(0.25, gt=0, le=1)
    driver_threshold: float = Field(
        0.4, ge=0, description="a factor is a driver only when it adds at least this log-hazard"
    )


class ComplaintConfig(StrictModel):
    open_delay_mean_days: float = Field(
        4.0, ge=1, description="days from the order to the complaint (geometric)"
    )
    channels: dict[str, float] = Field(
        default_factory=lambda: {"email": 0.35, "phone": 0.25, "chat": 0.25, "web_form": 0.15}
    )
    categories: dict[str, float] = Field(
        default_factory=lambda: {
            "delivery": 0.35,
            "product_quality": 0.25,
            "billing": 0.15,
            "refund": 0.15,
            "service": 0.10,
        }
    )
    severity: tuple[float, float, float] = Field((0.5, 0.35, 0.15), description="chance of severity 1, 2, 3")
    resolution_median_days: float = Field(2.0, gt=0, description="median days to resolve, times the severity")
    never_resolved: tuple[float, float, float] = Field((0.04, 0.08, 0.15), description="by severity")


class ShiftConfig(StrictModel):
    """Multipliers applied from --shift-at on (a behaviour change for drift detection)."""

    entry: float = Field(0.75, gt=0)
    visit: float = Field(0.85, gt=0)
    purchase: float = Field(0.9, gt=0)
    complaint: float = Field(2.0, gt=0)
    amount: float = Field(0.85, gt=0)
    churn: float = Field(1.3, gt=0)


class AnomalyConfig(StrictModel):
    """What `propensity generate --anomalies` adds to the exports, so the ingest's cleaning can be measured
    (docs/generator.md, "Anomalies"). It draws from a random stream of its own: the genuine rows are the
    same as without --anomalies."""

    bot_accounts: int = Field(5, ge=0, description="accounts used by bots (added to customers)")
    bot_active_share: float = Field(0.2, ge=0, le=1, description="share of days a bot is at work")
    bot_views_per_day: tuple[int, int] = Field((150, 600), description="page views on a day at work (range)")
    bot_gap_seconds: tuple[float, float] = Field((4.0, 40.0), description="seconds between a bot's views")
    short_view_share: float = Field(
        0.005, ge=0, le=1, description="share of page views before which a short view is inserted"
    )
    short_view_seconds: tuple[int, int] = Field((1, 2), description="a short view's time on the page")
    test_order_share: float = Field(0.001, ge=0, le=1, description="test orders per genuine order")
    test_amounts: tuple[float, ...] = Field((0.0, 999999.0), description="amounts test orders are placed with")
    outlier_order_share: float = Field(0.001, ge=0, le=1, description="orders with an absurd amount")
    outlier_amounts: tuple[float, float] = Field(
        (20_000.0, 2_000_000.0), description="range of absurd amounts (log-uniform)"
    )
    cancellation_share: float = Field(0.02, ge=0, le=1, description="genuine orders cancelled or returned")
    full_cancellation_share: float = Field(
        0.5, ge=0, le=1, description="of those, cancelled in full (id C<order>); the rest partly returned (R<order>)"
    )
    returned_share: tuple[float, float] = Field((0.1, 0.6), description="share of a partial return's amount")
    cancel_delay_days: tuple[float, float] = Field((0.05, 7.0), description="cancellation after the order")
    duplicate_complaint_share: float = Field(
        0.03, ge=0, le=1, description="complaints submitted a second time under another id"
    )
    duplicate_delay_minutes: tuple[float, float] = Field((1.0, 20.0), description="the second after the first")


class CampaignCondition(StrictModel):
    """Who a campaign lists, from behaviour the exports show; every given condition must hold (AND)."""

    days_since_last_order: tuple[int, int] | None = Field(
        None, description="inclusive range of days since the last order (since the sign-up when there is none)"
    )
    complaint_within_days: int | None = Field(
        None, ge=1, description="a complaint opened in this many days before the list"
    )

    @model_validator(mode="after")
    def _valid(self) -> CampaignCondition:
        if self.days_since_last_order is None and self.complaint_within_days is None:
            raise ValueError("a campaign needs at least one condition (days_since_last_order, complaint_within_days)")
        if self.days_since_last_order is not None:
            lo, hi = self.days_since_last_order
            if lo < 0 or hi < lo:
                raise ValueError(f"days_since_last_order: expected [min, max] with 0 <= min <= max, got [{lo}, {hi}]")
        return self


class CampaignConfig(StrictModel):
    """A campaign the simulated shop runs itself: a list every ``every_weeks`` Mondays of the customers
    ``when`` selects, a random ``control_share`` held out (not contacted), the rest contacted; a contact
    multiplies the churn hazard by ``effect`` for ``effect_days`` (1.0: the campaign does nothing).
    docs/generator.md, "Campaigns"."""

    name: str = Field(min_length=1, description="the rule name written to contacts.action_rule")
    when: CampaignCondition
    every_weeks: int = Field(1, ge=1, description="a list every this many weeks, on Mondays")
    start_after_days: int = Field(0, ge=0, description="first list on the first Monday this many days into the window")
    control_share: float = Field(0.1, gt=0, lt=1, description="share of each list held out (never contacted)")
    effect: float = Field(1.0, gt=0, description="churn hazard multiplier after a contact (1.0: no effect)")
    effect_days: int = Field(60, ge=1, description="days the effect lasts, from the contact's day")
    cooldown_days: int = Field(
        60, ge=0, description="a listed customer (contacted or held out) is not listed by this campaign again "
        "for this many days; at least the 60-day outcome window keeps each list's truth exact"
    )
    channel: str = Field("email", min_length=1, description="contacts.channel")


class GeneratorConfig(StrictModel):
    population: PopulationConfig = PopulationConfig()
    funnel: FunnelConfig = FunnelConfig()
    churn: ChurnConfig = ChurnConfig()
    complaints: ComplaintConfig = ComplaintConfig()
    shift: ShiftConfig = ShiftConfig()
    anomalies: AnomalyConfig = AnomalyConfig()
    truth_threads: int = Field(2, ge=1, le=64, description="threads for the ground-truth recursion")
    campaigns: list[CampaignConfig] = Field(
        default_factory=list, description="campaigns the shop runs (none: no contacts file, output unchanged)"
    )

    @model_validator(mode="after")
    def _unique_campaigns(self) -> GeneratorConfig:
        names = [c.name for c in self.campaigns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"campaign names must be unique; repeated: {dupes}")
        return self


def load_generator_config(path: str | Path | None = None) -> GeneratorConfig:
    """configs/generate.yaml (or ``path``); built-in defaults when the project has none."""
    if path is None:
        default = config_path("generate.yaml")
        if not default.is_file():
            return GeneratorConfig()
        path = default
    return load_config(path, GeneratorConfig)


# Multipliers of a day before the shift: the daily code multiplies by these instead of branching.
NO_SHIFT = ShiftConfig(entry=1, visit=1, purchase=1, complaint=1, amount=1, churn=1)


def weights(mapping: dict[str, float], name: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Names and normalised probabilities of the ``complaints.<name>`` weight table."""
    keys = tuple(mapping)
    p = np.array([mapping[k] for k in keys], dtype=float)
    if not keys or (p < 0).any() or p.sum() <= 0:
        raise ConfigError(f"generate config: complaints.{name} needs positive weights")
    return keys, p / p.sum()
