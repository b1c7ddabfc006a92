"""serving.causes: each row's contributions and ranking past computed once, whoever asks first (a rule's
top_cause condition or the reasons); the past a batch run saves reads back the same for /predict."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from tests.serving.test_batch import AS_OF, CHURN, _features
from training.reasons import History, load_templates, top_causes


class _Counting:
    """A LoadedModel that counts the rows TreeSHAP is run on."""

    def __init__(self, model):
        self.model, self.rows = model, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def contributions(self, X):
        self.rows += len(X)
        return self.model.contributions(X)


@pytest.fixture
def churn(project_home):
    from training.champion import load_model_version, register_booster

    train = _features(400, seed=1)
    y = ((train["days_since_last_order"].fillna(300) > 120) | (train["complaints_30d"] > 1)).astype(int)
    booster = lgb.train({"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1},
                        lgb.Dataset(train[CHURN].astype("float64"), label=y.to_numpy()), num_boost_round=20)
    register_booster(booster, "churn", bands={"high": 0.6, "medium": 0.3}, feature_service="churn_v1",
                     alias="champion")
    return load_model_version("churn")


def _fake_past(model, n_dates=4):
    """A ranking_context stand-in: a past per customer made from the customer's id, so any subset and any
    order of rows can be checked against it."""
    from training.cause_context import RankingContext

    causes = load_templates().cause_map("churn", model.feature_names).causes
    dates = [AS_OF - pd.Timedelta(weeks=n_dates - 1 - k) for k in range(n_dates)]

    def context(model, today, ids, as_of, source=None, templates=None, scale=None):
        seed = np.array([int(c[1:]) for c in ids], dtype=float)
        sums = np.sin(seed[None, :, None] + np.arange(n_dates)[:, None, None] * 1.7
                      + np.arange(len(causes))[None, None, :])
        raw = sums.sum(axis=2)
        events = (sums[1:] > sums[:-1])
        return RankingContext(History(dates, raw, 1 / (1 + np.exp(-raw)), sums,
                                      np.ones(raw.shape, dtype=bool), causes, events), None)

    return context


def test_rows_are_ranked_once_and_in_any_order_the_same(churn, monkeypatch):
    import serving.causes as causes_module
    from serving.causes import CauseRanks

    monkeypatch.setattr(causes_module, "ranking_context", _fake_past(churn))
    feats = _features(60, seed=4)
    model = _Counting(churn)
    ranks = CauseRanks({"churn": model}, {"churn": feats})
    first = ranks.top_cause("churn", np.array([7, 3, 11]))
    assert model.rows == 3
    both = ranks.contributions("churn", np.array([3, 20, 7, 40]))
    assert model.rows == 5  # only 20 and 40 were new
    np.testing.assert_allclose(both, churn.contributions(churn.matrix(feats.iloc[[3, 20, 7, 40]])), atol=1e-12)

    # The past of rows gathered from two computations is each row's own past.
    full = _fake_past(churn)(churn, None, feats["customer_id"].to_numpy(), AS_OF).history
    context = ranks.context("churn", np.array([40, 7, 3, 20]))
    np.testing.assert_array_equal(context.history.cause_sums, full.cause_sums[:, [40, 7, 3, 20]])
    np.testing.assert_array_equal(context.history.events, full.events[:, [40, 7, 3, 20]])
    # And the top cause is what the ranking of those rows alone gives.
    rows = np.array([7, 3, 11])
    expected = top_causes(churn.contributions(churn.matrix(feats.iloc[rows])), churn.feature_names, "churn",
                          history=full.take(rows))
    assert first.tolist() == expected.tolist()


def test_the_saved_past_reads_back_for_the_same_version_only(churn, monkeypatch, tmp_path):
    import serving.causes as causes_module
    from serving.causes import CauseRanks, RankingPast, past_file, save_past

    monkeypatch.setattr(causes_module, "ranking_context", _fake_past(churn))
    feats = _features(30, seed=5)
    ranks = CauseRanks({"churn": churn}, {"churn": feats})
    ranks.top_cause("churn", np.array([2, 9]))
    ranks.contributions("churn", np.array([5, 2]))
    save_past(ranks, tmp_path)
    past = RankingPast(past_file(tmp_path, "churn"))

    ids = feats["customer_id"].tolist()
    asked = [ids[5], "nobody", ids[2], ids[9], ids[1]]
    hit, history = past.lookup(churn.version, asked)
    assert hit.tolist() == [True, False, True, True, False]
    full = _fake_past(churn)(churn, None, np.array(ids), AS_OF).history
    for name in ("raw", "probabilities", "cause_sums", "present", "events"):
        np.testing.assert_array_equal(getattr(history, name), getattr(full, name)[:, [5, 2, 9]], err_msg=name)
    assert history.dates == full.dates and history.causes == full.causes
    miss, none = past.lookup("999", asked)
    assert not miss.any() and none is None
