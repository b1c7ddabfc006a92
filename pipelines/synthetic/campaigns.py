"""Campaigns the simulated shop runs itself (config ``campaigns``), so that the effect of an action is known.

On its Mondays a campaign lists the customers its condition selects (observable behaviour: days since the
last order, a recent complaint), holds a random share out as the control group and contacts the rest. A
contact multiplies the customer's churn hazard by the campaign's ``effect`` for ``effect_days`` from the
contact's day (``Simulation.effect_factor``). The contacts go to ``contacts.<fmt>`` as a CRM exports them
(the ``contacts`` family of core/contract.py: contacted customers only). The lists, their groups and the
truth go to ``campaign_truth.parquet``, apart from the exports like the ground truth: per listed customer the
exact P(no order in the 60 days from the list) without the contact and with it (``truth.contact_truth``),
whichever group the customer fell in. docs/generator.md, "Campaigns".

A listed customer (treated or held out) is not listed by the same campaign again for ``cooldown_days``:
with a cooldown of at least the outcome window, nothing the campaign does later reaches a list's window,
so the two probabilities are exactly what the list's treated and control customers face. A customer is
on at most one campaign's list a day (the first campaign in the config that selects them, like the
action rules). Draws come from a random stream of their own: the simulation's stream only changes
through the customers whose churn a contact prevented.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipelines.synthetic.config import CampaignCondition
from pipelines.synthetic.simulate import Simulation
from pipelines.synthetic.truth import contact_truth
from training.labels import CONTROL, TREATMENT  # the groups as the follow-up lists name them

if TYPE_CHECKING:
    import pandas as pd

_STREAM = 0x63616D70  # "camp": the campaigns' own random stream next to the simulation's seed
CAMPAIGN_TRUTH_FILE = "campaign_truth.parquet"


def selected(sim: Simulation, when: CampaignCondition, day: int, joined: int) -> np.ndarray:
    """Which of the first ``joined`` customers ``when`` selects at the start of ``day``."""
    mask = np.ones(joined, dtype=bool)
    if when.days_since_last_order is not None:
        lo, hi = when.days_since_last_order
        gap = day - sim.last_order_day[:joined]
        mask &= (gap >= lo) & (gap <= hi)
    if when.complaint_within_days is not None:
        mask &= sim.last_complaint_day[:joined] >= day - when.complaint_within_days
    return mask


class Campaigns:
    """The campaigns of one run: their schedule, cooldowns and random stream."""

    def __init__(self, sim: Simulation, seed: int):
        self.sim, self.cfg = sim, sim.cfg.campaigns
        self.rng = np.random.default_rng([seed, _STREAM])
        self.listed_until = np.full((len(self.cfg), sim.n), -1, dtype=np.int32)  # cooldown ends
        self.first_day = []
        for camp in self.cfg:
            d = camp.start_after_days
            self.first_day.append(d + (-(d + sim.start_weekday)) % 7)  # the first Monday from there
        self.contact_seq = 0

    def due(self, c: int, day: int) -> bool:
        first = self.first_day[c]
        return day >= first and (day - first) % (7 * self.cfg[c].every_weeks) == 0

    def untreated_truth(self, day: int, p_churn: np.ndarray) -> np.ndarray:
        """The week's p_churn had no contact acted from ``day`` on: what a model of untreated behaviour
        should say. Recomputed only for customers an earlier contact still acts on."""
        sim, out = self.sim, p_churn.copy()
        effective = self.sim.effect_mult != 1.0
        if not effective.any():
            return out
        acting = np.flatnonzero((sim.effect_until[effective, : len(p_churn)] > day).any(axis=0))
        if len(acting):
            none = np.full((len(self.cfg), len(acting)), -1, dtype=np.int32)
            out[acting] = contact_truth(sim, day, acting, none)
        return out

    def run(self, day: int, p_churn: np.ndarray, export) -> None:
        """The lists of ``day`` (a Monday, before its step): split, truth, contacts, effects.
        ``p_churn``: the week's ground truth (customers who joined before ``day``), the untreated truth."""
        sim, rng = self.sim, self.rng
        joined = len(p_churn)
        taken = np.zeros(joined, dtype=bool)
        for c, camp in enumerate(self.cfg):
            if not self.due(c, day):
                continue
            pick = selected(sim, camp.when, day, joined) & ~taken & (self.listed_until[c, :joined] <= day)
            cust = np.flatnonzero(pick)
            if not len(cust):
                continue
            taken[cust] = True
            self.listed_until[c, cust] = day + camp.cooldown_days
            control = rng.random(len(cust)) < camp.control_share
            untreated = p_churn[cust]
            if camp.effect == 1.0:
                treated_p = untreated.copy()  # nothing changes: the same numbers, not a recomputation
            else:
                until = sim.effect_until[:, cust].copy()
                until[c] = np.maximum(until[c], day + camp.effect_days)
                treated_p = contact_truth(sim, day, cust, until)
            export.write_campaign_truth(day, cust, camp.name, np.where(control, CONTROL, TREATMENT),
                                        untreated, treated_p)
            contacted = cust[~control]
            sim.effect_until[c, contacted] = np.maximum(sim.effect_until[c, contacted], day + camp.effect_days)
            # Office hours: the CRM works the list during the day.
            sec = rng.integers(9 * 3600, 17 * 3600, len(contacted))
            numbers = self.contact_seq + np.arange(len(contacted))
            self.contact_seq += len(contacted)
            export.write_contacts(day, numbers, contacted, sec, camp.name, camp.channel)


# ---- the lists, for the effect report and monitoring ----------------------------------------------------
def campaign_lists(truth_file) -> dict[str, pd.DataFrame]:
    """The campaigns' lists by date (YYYY-MM-DD), in the columns `propensity score` gives its follow-up
    lists and `propensity effect` reads: customer_id, as_of, action_rule, group."""
    import pandas as pd

    truth = pd.read_parquet(truth_file, columns=["customer_id", "as_of", "action_rule", "group"])
    return {f"{day:%Y-%m-%d}": part.reset_index(drop=True) for day, part in truth.groupby("as_of", sort=True)}


def write_lists(lists: dict[str, pd.DataFrame], scores_dir) -> list[Path]:
    """Each list as ``<scores_dir>/<date>/scores.parquet``, where `score` puts its lists (the simulation
    cannot call the platform's model while it runs, so its campaigns make their own lists). Refuses a
    date that already has a list: a real one is never replaced."""
    from core.errors import PropensityError
    from core.io import write_parquet
    from core.settings import SCORES_FILE

    scores_dir = Path(scores_dir)
    taken = sorted(day for day in lists if (scores_dir / day / SCORES_FILE).exists())
    if taken:
        raise PropensityError(f"{scores_dir} already has lists for {', '.join(taken)}: not replacing them")
    written = []
    for day, frame in lists.items():
        (scores_dir / day).mkdir(parents=True, exist_ok=True)
        written.append(write_parquet(scores_dir / day / SCORES_FILE, frame))
    return written


def oracle_lists(files: dict[str, Path], model: str = "churn") -> dict[str, pd.DataFrame]:
    """Weekly lists of every customer in the ground truth, scored by the truth itself: ``<model>_probability``
    = the untreated p_churn (what a model of untreated behaviour says at its best; p_churn without
    campaigns), with the campaigns' ``action_rule`` and ``group`` ("" for customers no campaign listed).
    What monitoring reads from `score`'s lists, for measuring it on a simulated year."""
    import pandas as pd

    from serving.actions import prediction_column

    truth = pd.read_parquet(files["ground_truth"])
    column = "p_churn_untreated" if "p_churn_untreated" in truth.columns else "p_churn"
    truth = truth[["customer_id", "as_of", column]].rename(columns={column: prediction_column(model)})
    if "campaign_truth" in files:
        listed = pd.read_parquet(files["campaign_truth"], columns=["customer_id", "as_of", "action_rule", "group"])
        truth = truth.merge(listed, on=["customer_id", "as_of"], how="left")
    else:
        truth = truth.assign(action_rule=None, group=None)
    truth[["action_rule", "group"]] = truth[["action_rule", "group"]].fillna("")
    return {f"{day:%Y-%m-%d}": part.reset_index(drop=True) for day, part in truth.groupby("as_of", sort=True)}
