"""Reasons by cause: the feature -> cause map (complete for every model, checked), facts that read as a
person writes them (plurals, dates) in English and Chinese, the cause line, and the history ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import ConfigError
from core.settings import REPO_ROOT
from core.specs import load_spec, model_names
from training.reasons import History, explain, load_templates, sentence


@pytest.fixture(scope="module")
def templates():
    return load_templates()


def _edited(tmp_path, old: str, new: str):
    text = (REPO_ROOT / "configs" / "reasons.yaml").read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "reasons.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", model_names())
def test_every_feature_of_every_model_has_a_cause(templates, name):
    from features.retrieval import model_feature_names

    features = model_feature_names(load_spec(name).feature_service)
    cmap = templates.cause_map(name, features)
    assert len(cmap.of_feature) == len(features)
    assert set(np.unique(cmap.of_feature)) <= set(range(len(cmap.causes)))
    np.testing.assert_array_equal(cmap.onehot.sum(axis=1), 1.0)  # one cause per feature


def test_a_feature_without_a_cause_is_an_error_naming_it(templates, tmp_path):
    with pytest.raises(ConfigError, match=r"brand_new_feature.*churn"):
        templates.cause_map("churn", ["complaints_30d", "brand_new_feature"])
    with pytest.raises(ConfigError, match=r"models\.nomodel"):
        templates.cause_map("nomodel", ["complaints_30d"])
    path = _edited(tmp_path, "cause: {churn: complaints, conversion: complaints, value: complaints}\n    en: \"{complaints_30d",
                   "cause: {churn: grievances, conversion: complaints, value: complaints}\n    en: \"{complaints_30d")
    with pytest.raises(ConfigError, match=r"features\.complaints_30d\.cause\.churn.*grievances"):
        load_templates(path)
    path = _edited(tmp_path, 'line: "{headline} ({direction}): {evidence}"', 'line: "{headline}: {evidence}"')
    with pytest.raises(ConfigError, match=r"languages\.en\.line.*direction"):
        load_templates(path)


def test_plurals_and_units_in_english_and_chinese(templates):
    one = {"complaints_30d": 1.0, "open_complaints": 1.0}
    assert sentence("complaints_30d", one, "en", templates) == "1 complaint in the last 30 days, 1 still open"
    assert sentence("complaints_30d", {"complaints_30d": 3.0, "open_complaints": 0.0}, "en", templates) == (
        "3 complaints in the last 30 days, 0 still open")
    assert sentence("days_since_last_complaint", {"days_since_last_complaint": 1.0}, "en", templates) == (
        "last complaint 1 day ago")
    assert sentence("days_since_last_complaint", {"days_since_last_complaint": 21.0}, "en", templates) == (
        "last complaint 21 days ago")
    assert sentence("product_views_30d", {"product_views_30d": 1.0}, "en", templates) == (
        "1 product page viewed in the last 30 days")
    assert sentence("pages_per_session_7d", {"pages_per_session_7d": 1.0}, "en", templates) == (
        "1.0 pages per visit in the last 7 days")  # a measurement, not a count: stays as written
    assert sentence("complaints_30d", one, "zh", templates) == "近30天投诉1次,1次未解决"
    assert sentence("days_since_last_complaint", {"days_since_last_complaint": 1.0}, "zh", templates) == (
        "最近一次投诉在1天前")


FEATURES = ["complaints_30d", "open_complaints", "days_since_last_complaint", "days_since_last_order",
            "sessions_30d"]


def _rows():
    features = pd.DataFrame({"complaints_30d": [1.0, 0.0], "open_complaints": [1.0, 0.0],
                             "days_since_last_complaint": [12.0, np.nan], "days_since_last_order": [40.0, 200.0],
                             "sessions_30d": [4.0, 0.0]})
    # row 0: complaints raise (0.9 + 0.5 + 0.2), recent visits lower; row 1: inactivity raises, complaints lower
    contributions = np.array([[0.9, 0.5, 0.2, 0.1, -0.4, -1.0],
                              [-0.1, 0.0, -0.2, 1.5, 0.3, -1.0]])
    return features, contributions


def test_a_cause_line_names_only_raising_facts_in_both_languages(templates):
    features, contributions = _rows()
    en = explain(contributions, features, FEATURES, "churn", templates=templates)
    top = en[0][0]
    assert (top.cause, top.direction) == ("complaints", "raises")
    assert top.contribution == pytest.approx(1.6)
    # Two strongest facts; open_complaints is skipped: the first fact already says "1 still open".
    assert top.sentence == ("Complaints (raises the churn risk): 1 complaint in the last 30 days, 1 still open; "
                            "last complaint 12 days ago")
    assert [e.feature for e in top.evidence] == ["complaints_30d", "days_since_last_complaint"]
    assert [(r.cause, r.direction) for r in en[0]] == [("complaints", "raises"), ("inactivity", "lowers")]
    assert [(r.cause, r.direction) for r in en[1]] == [("inactivity", "raises"), ("complaints", "lowers")]
    assert en[1][0].sentence == ("Inactivity (raises the churn risk): no order for 200 days; "
                                 "0 visits in the last 30 days")
    zh = explain(contributions, features, FEATURES, "churn", lang="zh", templates=templates)
    assert zh[0][0].sentence == "投诉(推高流失风险):近30天投诉1次,1次未解决;最近一次投诉在12天前"


def test_history_names_the_cause_that_rose_and_the_date(templates):
    """Row 1 today looks inactive, but its risk jumped in the week of a complaint: the history ranking
    names complaints and the date; the snapshot ranking names inactivity."""
    features, contributions = _rows()
    contributions = contributions.copy()
    contributions[1] = [0.05, 0.0, 0.1, 1.5, 0.3, -1.0]  # complaints now barely raise the risk
    causes = templates.cause_map("churn", FEATURES).causes
    c, i = causes.index("complaints"), causes.index("inactivity")
    sums = np.zeros((4, 2, len(causes)))
    sums[:, 1, i] = [0.1, 0.3, 0.7, 1.8]  # inactivity climbs a little every week
    sums[:, 1, c] = [0.0, 1.2, 0.6, 0.15]  # the complaint of week 1 raised it most, then faded
    sums[:, 0, c] = [0.0, 0.2, 0.4, 1.6]
    raw = sums.sum(axis=2) - 1.0
    dates = [pd.Timestamp(d, tz="UTC") for d in ("2026-04-26", "2026-05-03", "2026-05-10", "2026-05-17")]
    history = History(dates, raw, 1 / (1 + np.exp(-raw)), sums, np.ones((4, 2), dtype=bool), causes)
    snapshot = explain(contributions, features, FEATURES, "churn", templates=templates)
    assert snapshot[1][0].cause == "inactivity"
    ranked = explain(contributions, features, FEATURES, "churn", templates=templates, history=history)
    top = ranked[1][0]
    assert top.cause == "complaints" and top.direction == "raises"
    assert top.rose == {"date": "2026-05-03", "before": pytest.approx(0.289, abs=1e-3),
                        "after": pytest.approx(0.622, abs=1e-3)}
    assert top.sentence.endswith("risk rose from 29% to 62% in the week to 3 May 2026")
    zh = explain(contributions, features, FEATURES, "churn", lang="zh", templates=templates, history=history)
    assert zh[1][0].sentence.endswith("2026年5月3日前一周风险由29%升至62%")
