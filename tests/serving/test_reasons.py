"""Reasons without HTTP: exact SHAP, ranking, base + contributions = raw score, sentences, bands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import ConfigError
from tests.serving.conftest import CHURN_FEATURES, CONVERSION_FEATURES
from training.reasons import (
    band,
    explain,
    explain_model,
    load_templates,
    rank_contributions,
    sentence,
    top_driver_agreement,
)


@pytest.fixture(scope="module")
def templates():
    return load_templates()


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::PendingDeprecationWarning")
def test_contributions_equal_shap_tree_explainer(boosters, customers):
    import shap  # the reference only: the service never imports it

    booster = boosters["churn"]
    X = customers[CHURN_FEATURES].to_numpy(dtype=np.float64)[:50]
    ours = booster.predict(X, pred_contrib=True)
    explainer = shap.TreeExplainer(booster)
    reference = explainer.shap_values(X)
    reference = reference[1] if isinstance(reference, list) else reference
    np.testing.assert_allclose(ours[:, :-1], reference, atol=1e-6)
    np.testing.assert_allclose(ours[:, -1], np.ravel(explainer.expected_value)[-1], atol=1e-6)


def test_base_plus_contributions_is_raw_score(loaded_models, customers):
    model = loaded_models["conversion"]
    X = customers[CONVERSION_FEATURES].to_numpy(dtype=np.float64)
    contrib = model.contributions(X)
    np.testing.assert_allclose(contrib.sum(axis=1), model.booster.predict(X, raw_score=True), atol=1e-9)


def test_rank_orders_by_absolute_contribution():
    contrib = np.array([[0.1, -0.5, 0.3, 0.0, 9.0], [0.0, 0.2, -0.2, 0.4, -1.0]])
    top = rank_contributions(contrib, 3)
    assert top.tolist() == [[1, 2, 0], [3, 1, 2]]
    assert rank_contributions(contrib, 10).shape == (2, 4)  # capped at the feature count, base excluded
    assert rank_contributions(contrib, 0).shape == (2, 0)


def test_explain_ranks_and_signs(loaded_models, customers, templates):
    """One reason per cause: raising causes first, then lowering ones; each cause's facts are its own
    features, pushing its way."""
    reasons = explain_model(loaded_models["churn"], customers.head(30), top_k=3, lang="en", templates=templates)
    causes = templates.cause_map("churn", CHURN_FEATURES).causes
    assert len(reasons) == 30
    for row in reasons:
        assert 1 <= len(row) <= 3
        directions = [r.direction for r in row]
        assert directions == sorted(directions, key=["raises", "lowers"].index)
        assert len({r.cause for r in row}) == len(row)
        for r in row:
            assert r.cause in causes
            assert r.direction == ("raises" if r.contribution > 0 else "lowers")
            assert r.feature in CHURN_FEATURES and r.sentence.startswith(r.headline)
            for e in r.evidence:
                assert templates.cause_of(e.feature, "churn") == r.cause
                assert (e.contribution > 0) == (r.direction == "raises") and e.contribution != 0


def test_sentence_uses_other_columns_of_the_row(templates):
    row = {"complaints_30d": 3.0, "open_complaints": 1.0}
    assert sentence("complaints_30d", row, "en", templates) == "3 complaints in the last 30 days, 1 still open"
    assert sentence("complaints_30d", row, "zh", templates) == "近30天投诉3次,1次未解决"


def test_missing_values_have_their_own_sentence(templates):
    assert sentence("days_since_last_order", {"days_since_last_order": None}, "en", templates) == "has never ordered"
    assert sentence("days_since_last_order", {"days_since_last_order": float("nan")}, "zh", templates) == "从未下单"
    # a missing *other* column renders as "unknown" instead of failing
    assert sentence("complaints_30d", {"complaints_30d": 2.0, "open_complaints": None}, "en", templates) == (
        "2 complaints in the last 30 days, unknown still open"
    )
    assert sentence("not_templated", {"not_templated": 2.5}, "en", templates) == "not templated: 2.5"


def test_explain_reports_feature_values(loaded_models, customers, templates):
    row = customers.iloc[[0]]
    reasons = explain_model(loaded_models["churn"], row, top_k=7, lang="zh", templates=templates)[0]
    for r in reasons:
        expected = row[r.feature].iloc[0]
        assert (r.value is None and pd.isna(expected)) or r.value == pytest.approx(expected)


def test_explain_rejects_misaligned_input(templates):
    with pytest.raises(ValueError, match="shape"):
        explain(np.zeros((2, 3)), pd.DataFrame({"a": [1, 2]}), ["a", "b", "c"], "churn", templates=templates)
    with pytest.raises(ValueError, match="lang"):
        explain(np.zeros((1, 2)), pd.DataFrame({"a": [1]}), ["a"], "churn", lang="fr", templates=templates)


def test_templates_map_features_to_causes_and_reject_bad_specs(templates, tmp_path):
    from core.settings import REPO_ROOT

    assert templates.cause_of("complaints_30d", "churn") == "complaints"
    assert templates.cause_of("days_since_last_visit", "conversion") == "recent_visit"
    assert templates.cause_of("nope", "churn") is None
    shipped = (REPO_ROOT / "configs" / "reasons.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "reasons.yaml"
    bad.write_text(shipped.replace("{orders_30d:.0f} orders in the last 30 days", "{orders_30d:.0q}", 1),
                   encoding="utf-8")
    with pytest.raises(ConfigError, match=r"features.orders_30d.en"):
        load_templates(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text(shipped.replace("  orders_30d:\n", "  orders_30d:\n    drivr: {}\n", 1), encoding="utf-8")
    with pytest.raises(ConfigError, match="drivr"):
        load_templates(typo)


def test_bands_follow_thresholds():
    got = band([0.05, 0.3, 0.59, 0.6, 0.99], {"high": 0.6, "medium": 0.3})
    assert got.tolist() == ["low", "medium", "medium", "high", "high"]


@pytest.mark.behaviour
def test_top_reason_finds_the_true_driver(loaded_models, customers, templates):
    """On data where churn comes from complaints or inactivity, flagged customers' top reason says so."""
    model = loaded_models["churn"]
    flagged = customers[model.predict_proba(customers[CHURN_FEATURES].to_numpy(np.float64)) >= 0.6]
    # The generating logit is linear, so each driver's true share is its term minus the term's mean.
    days = customers["days_since_last_order"].fillna(200)
    complaint_term = 1.3 * (flagged["complaints_30d"] - customers["complaints_30d"].mean())
    inactivity_term = 0.015 * (flagged["days_since_last_order"].fillna(200) - days.mean())
    truth = np.where(complaint_term > inactivity_term, "complaints", "inactivity").tolist()
    reasons = explain_model(model, flagged, top_k=3, templates=templates)
    agreement = top_driver_agreement(reasons, truth, "churn", templates)
    assert len(flagged) > 20
    assert agreement >= 0.7


@pytest.mark.behaviour
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_crm_text_never_names_a_factor_that_lowers_the_score(loaded_models, customers, templates, lang):
    """Over every scored customer of both models: the CRM text is exactly the raising causes' lines, each
    cause in it raises the score, and every fact in it comes from a feature that raises it; the lowering
    detail is in the JSON only."""
    import json

    from training.reasons import explain_table

    lowering_seen = 0
    for name, features in (("churn", CHURN_FEATURES), ("conversion", CONVERSION_FEATURES)):
        model = loaded_models[name]
        contributions = model.contributions(customers[features].to_numpy(np.float64))
        text, as_json = explain_table(contributions, customers, features, name, 5, lang, templates)
        sep = templates.languages[lang].cause_sep
        for crm, detail in zip(text, as_json, strict=True):
            causes = json.loads(detail)
            raising = [c for c in causes if c["direction"] == "raises"]
            nothing = getattr(templates.models[name].nothing_raises, lang)
            assert crm == (sep.join(c["sentence"] for c in raising) if raising else nothing if causes else "")
            for c in raising:
                assert c["contribution"] > 0 and c["evidence"]
                assert all(e["contribution"] > 0 for e in c["evidence"])
            for c in causes:
                if c["direction"] == "lowers":
                    lowering_seen += 1
                    assert c["contribution"] < 0 and c["sentence"] not in crm
                    assert all(e["contribution"] < 0 and e["sentence"] not in crm for e in c["evidence"])
    assert lowering_seen > 100  # the data has lowering causes: the test would see a leak
