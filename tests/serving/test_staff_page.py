"""The staff page: display names for every key the shipped configs can produce, the list's filters,
order, paging and validation (serving.staff and GET /ui/api/flagged), one customer's detail with the
reasons by cause in both languages, and (``slow``) the page itself in headless Chromium against a real
`propensity serve` on 127.0.0.1: a queue, paging, a detail view, Chinese without a raw key."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.serving.conftest import serve_app, table_fetcher

KEY = {"X-API-Key": "test-key"}
AS_OF = "2026-10-31"


def shipped_vocabulary():
    from core.specs import model_names
    from features.catalog import SERVICES
    from features.retrieval import model_feature_names
    from features.settings import load_features_config
    from serving.actions import load_actions_config, load_tags_config
    from serving.staff import vocabulary
    from training.reasons import load_templates

    features = [f for s in SERVICES for f in model_feature_names(s)]
    return vocabulary(load_actions_config(), load_tags_config(), load_features_config(), load_templates(),
                      model_names(), features)


def test_every_shipped_key_has_a_chinese_and_an_english_name():
    from serving.config import load_staff_page_config
    from serving.staff import labels, missing_labels

    vocab, config = shipped_vocabulary(), load_staff_page_config()
    # The shipped configs produce these kinds of keys; each must be in the vocabulary, not silently empty.
    for kind in ("queue", "action", "segment", "stage", "tag", "feature", "cause", "model"):
        assert vocab.known(kind), kind
    assert "general_to_win_back" in vocab.known("segment") and "days_since_last_visit" in vocab.known("feature")
    assert missing_labels(config, vocab, "zh") == {}
    assert missing_labels(config, vocab, "en") == {}
    zh = labels(config, vocab, "zh")
    assert zh["segment"]["general_to_win_back"] == "一般挽留客户"
    for kind, names in zh.items():
        if kind == "ui":
            continue
        for key, name in names.items():
            assert "_" not in name, f"{kind}.{key}: {name!r} looks like a raw key"


def test_a_key_without_a_name_is_humanised_and_actions_fall_back_to_their_text():
    from serving.config import LabelText, StaffPageConfig
    from serving.staff import labels, missing_labels

    vocab = shipped_vocabulary()
    bare = StaffPageConfig(labels={"queue": {"sales": LabelText(zh="销售")}})
    zh, en = labels(bare, vocab, "zh"), labels(bare, vocab, "en")
    assert zh["queue"]["sales"] == "销售" and en["queue"]["sales"] == "sales"
    assert zh["feature"]["days_since_last_visit"] == "days since last visit"
    assert en["action"]["complaint_recovery"] == "Call to resolve the open complaint, then a goodwill voucher"
    assert "complaint_recovery" in missing_labels(bare, vocab, "zh")["action"]
    assert "complaint_recovery" not in missing_labels(bare, vocab, "en").get("action", [])


def test_staff_page_config_refuses_a_page_size_above_its_maximum(tmp_path):
    from core.errors import ConfigError
    from serving.config import load_staff_page_config

    path = tmp_path / "staff_page.yaml"
    path.write_text("page_size: 50\nmax_page_size: 20\n")
    with pytest.raises(ConfigError, match="page_size 50 is above max_page_size 20"):
        load_staff_page_config(path)
    path.write_text("labels: {queues: {}}\n")
    with pytest.raises(ConfigError, match="labels.queues"):
        load_staff_page_config(path)


# ---------------------------------------------------------------------------------------------- fixtures
def reason(feature, value, contribution, model="churn", sentence=None):
    return {"model": model, "feature": feature, "value": value, "contribution": contribution,
            "direction": "raises" if contribution > 0 else "lowers", "sentence": sentence or f"{feature} = {value}"}


def scores_frame(n_complaints: int = 30, seed: int = 3) -> pd.DataFrame:
    """A latest scores file with the columns batch scoring writes: customers in three work queues, one
    not in any (default), a control row and a lost row; priorities distinct except for one tie."""
    rng = np.random.default_rng(seed)
    rows = []

    def add(cid, rule, queue, priority, group="treatment", tags="", segment="general_to_win_back",
            stage="at_risk", reasons=None, status="in queue"):
        rows.append({
            "customer_id": cid, "as_of": pd.Timestamp(AS_OF, tz="UTC"),
            "churn_probability": float(rng.uniform(0.6, 0.99)), "churn_band": "high",
            "conversion_probability": float(rng.uniform(0, 0.3)), "conversion_band": "low",
            "value": priority * 1.2 if priority is not None else np.nan, "value_at_risk": priority,
            "value_upside": 1.0, "rfm_segment": segment, "lifecycle_stage": stage,
            "layer_activity": "low", "layer_value": "low", "layer_intent": "low", "layer_risk": "high",
            "tags": tags, "reasons": "; ".join(r["sentence"] for r in reasons or []),
            "reasons_json": json.dumps(reasons or []), "action": f"action of {rule}", "queue": queue,
            "action_rule": rule, "group": group, "priority": priority, "queue_status": status,
        })

    for i in range(n_complaints):
        add(f"C{i:04d}", "complaint_recovery", "service_complaints", float(100 - i),
            tags="open_complaint" + (";high_value" if i % 3 == 0 else ""),
            segment="important_value" if i % 2 else "general_to_win_back",
            reasons=[reason("complaints_30d", 2.0, 0.9, sentence="2 complaints in the last 30 days, 1 still open"),
                     reason("days_since_last_complaint", 12.0, 0.4, sentence="last complaint 12 days ago"),
                     reason("days_since_last_visit", 40.0, 0.3, sentence="last visit 40 days ago"),
                     reason("orders_30d", 3.0, -0.2, sentence="3 orders in the last 30 days")])
    add("C0100", "retention_offer", "marketing_retention", 5.0, stage="active",
        reasons=[reason("orders_trend_30d", -0.5, 0.6, sentence="orders fell")])
    add("C0101", "retention_offer", "marketing_retention", 5.0, stage="active")  # tie with C0100: by id
    add("C0102", "retention_offer", "marketing_retention", np.nan, stage="active")  # no priority: last
    add("C0200", "sales_follow_up", "sales", 9.0, reasons=[
        reason("cart_views_30d", 4.0, 0.8, model="conversion", sentence="4 cart views")])
    add("C0300", "", "none", None, group="", status="")
    add("C0301", "complaint_recovery", "none", 50.0, group="control", status="")
    add("C0302", "lost", "none", None, group="", status="")
    return pd.DataFrame(rows)


def write_scores(home: Path, frame: pd.DataFrame, snapshot: pd.DataFrame | None = None) -> None:
    scores = home / "data" / "scores"
    day = scores / AS_OF
    day.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(day / "scores.parquet", index=False)
    if snapshot is not None:
        snapshot.to_parquet(day / "features.parquet", index=False)
    else:
        (day / "features.parquet").unlink(missing_ok=True)
    frame.to_parquet(scores / "latest.parquet", index=False)


@pytest.fixture
def staff(tmp_path, monkeypatch):
    """StaffLists of the shipped configs over a tmp project home."""
    from core.settings import REPO_ROOT
    from serving.service import staff_lists

    monkeypatch.setenv("PROPENSITY_HOME", str(tmp_path))
    monkeypatch.setenv("PROPENSITY_CONFIGS", str(REPO_ROOT / "configs"))
    return staff_lists(["churn", "conversion", "value"])


def query(staff, **params):
    from serving.staff import parse_list_query

    return staff.page(parse_list_query([(k, str(v)) for k, v in params.items()], staff.vocab, staff.config, "en"))


# ---------------------------------------------------------------------------------------------- the list
def test_the_list_is_one_queue_by_priority_and_paged(staff, tmp_path):
    write_scores(tmp_path, scores_frame())
    first = query(staff, queue="service_complaints", page_size=10)
    assert first["total"] == 30 and first["pages"] == 3 and len(first["rows"]) == 10
    assert [r["customer_id"] for r in first["rows"]] == [f"C{i:04d}" for i in range(10)]
    assert {r["queue"] for r in first["rows"]} == {"service_complaints"}
    last = query(staff, queue="service_complaints", page_size=10, page=3)
    assert [r["customer_id"] for r in last["rows"]] == [f"C{i:04d}" for i in range(20, 30)]
    assert query(staff, queue="service_complaints", page_size=10, page=4)["rows"] == []
    # Counts per work queue; the default, control and lost rows are in no list.
    assert first["queues"] == {"service_vip": 0, "service_complaints": 30, "marketing_retention": 3,
                               "sales": 1, "marketing_reactivation": 0}
    everyone = query(staff, page_size=100)
    assert everyone["total"] == 34
    assert not {"C0300", "C0301", "C0302"} & {r["customer_id"] for r in everyone["rows"]}
    retention = query(staff, queue="marketing_retention")["rows"]
    assert [r["customer_id"] for r in retention] == ["C0100", "C0101", "C0102"]  # tie by id, no priority last
    priorities = [r["priority"] for r in everyone["rows"] if r["priority"] is not None]
    assert priorities == sorted(priorities, reverse=True)
    assert first["as_of"].startswith(AS_OF) and first["page_size"] == 10


def test_filters_combine_and_search_by_part_of_an_id(staff, tmp_path):
    write_scores(tmp_path, scores_frame())
    tagged = query(staff, queue="service_complaints", tag="high_value", page_size=100)
    assert tagged["total"] == 10 and all("high_value" in r["tags"] for r in tagged["rows"])
    both = query(staff, tag="high_value", segment="important_value", page_size=100)
    assert {r["customer_id"] for r in both["rows"]} == {f"C{i:04d}" for i in range(30) if i % 3 == 0 and i % 2}
    assert query(staff, action="sales_follow_up")["total"] == 1
    assert query(staff, stage="active")["total"] == 3
    found = query(staff, q="c001")  # case-insensitive part of an id
    assert {r["customer_id"] for r in found["rows"]} == {f"C{i:04d}" for i in range(10, 20)}
    assert {r["customer_id"] for r in query(staff, q=" 010 ")["rows"]} == {"C0010", "C0100", "C0101", "C0102"}
    assert query(staff, q="C0300")["total"] == 0  # in no queue
    assert query(staff, queue="sales", tag="open_complaint")["total"] == 0


def test_bad_query_parameters_are_400s_naming_the_parameter(staff, tmp_path):
    from serving.staff import BadQuery, parse_list_query

    write_scores(tmp_path, scores_frame())
    bad = [
        ([("queue", "nope")], "queue", "known: service_vip"),
        ([("queue", "none")], "queue", "unknown"),  # the no-work queue is not a list
        ([("action", "lost")], "action", "unknown"),
        ([("segment", "x")], "segment", "general_to_win_back"),
        ([("stage", "gone")], "stage", "lapsed"),
        ([("tag", "vip")], "tag", "high_value"),
        ([("page", "0")], "page", "outside 1..100000"),
        ([("page", "-1")], "page", "not a whole number"),
        ([("page", "2.5")], "page", "not a whole number"),
        ([("page_size", "101")], "page_size", "outside 1..100"),
        ([("page_size", "")], "page_size", "not a whole number"),
        ([("lang", "fr")], "lang", "known: en, zh"),
        ([("q", "   ")], "q", "not only spaces"),
        ([("q", "x" * 257)], "q", "1 to 256"),
        ([("sort", "id")], "sort", "unknown query parameter"),
        ([("page", "1"), ("page", "2")], "page", "give it once"),
    ]
    for params, field, words in bad:
        with pytest.raises(BadQuery, match=re.escape(words)) as caught:
            parse_list_query(params, staff.vocab, staff.config, "en")
        assert caught.value.field == field and caught.value.status == 400, params


def test_a_row_shows_action_queue_and_the_headline_cause_with_evidence(staff, tmp_path):
    write_scores(tmp_path, scores_frame())
    row = query(staff, queue="service_complaints", page_size=1)["rows"][0]
    assert row["action_rule"] == "complaint_recovery" and row["queue"] == "service_complaints"
    assert row["queue_status"] == "in queue" and row["priority"] == 100.0 and row["value_at_risk"] == 100.0
    # complaints_30d and days_since_last_complaint are both complaints in configs/reasons.yaml: one cause.
    assert row["headline"] == {"model": "churn", "cause": "complaints", "feature": None, "evidence": [
        "2 complaints in the last 30 days, 1 still open", "last complaint 12 days ago"]}
    assert row["scores"]["churn"]["band"] == "high" and 0 < row["scores"]["churn"]["probability"] < 1
    assert set(row["tags"]) == {"open_complaint", "high_value"}
    assert "reasons_json" not in row and "causes" not in row  # the list stays small


def test_chinese_sentences_come_from_the_templates_and_the_feature_snapshot(staff, tmp_path):
    frame = scores_frame(n_complaints=2)
    snapshot = pd.DataFrame({"customer_id": ["C0000", "C0001"], "churn__open_complaints": [1.0, 0.0]})
    write_scores(tmp_path, frame, snapshot)
    rows = query(staff, queue="service_complaints", lang="zh")["rows"]
    assert rows[0]["headline"]["evidence"] == ["近30天投诉2次,1次未解决", "最近一次投诉在12天前"]
    assert rows[1]["headline"]["evidence"][0] == "近30天投诉2次,0次未解决"
    # Without the snapshot the template's second value is unknown: the fact's name and its value.
    write_scores(tmp_path, frame)
    rows = query(staff, queue="service_complaints", lang="zh")["rows"]
    assert rows[0]["headline"]["evidence"][0] == "投诉次数(近30天):2"


def test_detail_groups_every_reason_by_cause_in_the_page_language(staff, tmp_path):
    from serving.staff import cause_of

    write_scores(tmp_path, scores_frame(n_complaints=2))
    detail = staff.customer("C0000", "zh")["customer"]
    causes = detail["causes"]
    visit = cause_of({"model": "churn", "feature": "days_since_last_visit"}, staff.templates)
    orders = cause_of({"model": "churn", "feature": "orders_30d"}, staff.templates)
    assert len({"complaints", visit, orders}) == 3  # configs/reasons.yaml puts them apart
    assert [(c["cause"], c["direction"]) for c in causes] == [
        ("complaints", "raises"), (visit, "raises"), (orders, "lowers")]
    assert causes[0]["contribution"] == pytest.approx(1.3)
    assert [f["feature"] for f in causes[0]["facts"]] == ["complaints_30d", "days_since_last_complaint"]
    assert causes[1]["facts"][0]["sentence"] == "最近一次访问在40天前"
    assert causes[2]["facts"][0] == {"feature": "orders_30d", "value": 3.0, "contribution": -0.2,
                                     "direction": "lowers", "sentence": "近30天下单3次"}
    assert detail["layers"] == {"activity": "low", "value": "low", "intent": "low", "risk": "high"}
    assert staff.customer("C0000", "en")["customer"]["causes"][1]["facts"][0]["sentence"] == "last visit 40 days ago"
    # A scored customer in no queue has a detail too (no reasons); an unknown one is not found.
    assert staff.customer("C0300", "en")["customer"]["causes"] == []
    assert staff.customer("ghost", "en") == {"models": ["churn", "conversion", "value"], "lang": "en",
                                             "found": False, "customer": None, "error": "not in the latest scores"}


def test_a_cause_written_by_batch_scoring_wins_over_the_template_driver(staff, tmp_path):
    frame = scores_frame(n_complaints=1)
    frame.loc[0, "reasons_json"] = json.dumps([{**reason("days_since_last_visit", 40.0, 0.5), "cause": "complaints",
                                                "sentences": {"zh": "投诉后再未访问"}}])
    write_scores(tmp_path, frame)
    row = query(staff, queue="service_complaints", lang="zh")["rows"][0]
    assert row["headline"] == {"model": "churn", "cause": "complaints", "feature": None, "evidence": ["投诉后再未访问"]}


def test_reasons_that_are_causes_with_evidence_and_a_date(staff, tmp_path):
    """The batch form of training.reasons by cause: one entry per cause with its facts as evidence and,
    for the top cause, when the risk rose; the page renders all of it in its own language."""
    from serving.staff import labels

    frame = scores_frame(n_complaints=1)
    cause_line = {"model": "churn", "feature": "complaints_30d", "value": 2.0, "contribution": 1.1,
                  "direction": "raises", "sentence": "Complaints (raises the churn risk): ...", "cause": "complaints",
                  "headline": "Complaints", "rose": {"date": "2026-10-04", "before": 0.2, "after": 0.85},
                  "evidence": [{"feature": "days_since_last_complaint", "value": 12.0, "contribution": 0.5,
                                "sentence": "last complaint 12 days ago"},
                               {"feature": "complaints_30d", "value": 2.0, "contribution": 0.6,
                                "sentence": "2 complaints in the last 30 days, 1 still open"}]}
    lowering = {"model": "churn", "feature": "orders_30d", "value": 3.0, "contribution": -0.3, "direction": "lowers",
                "sentence": "...", "cause": "declining_activity", "headline": "Declining activity",
                "evidence": [{"feature": "orders_30d", "value": 3.0, "contribution": -0.3, "sentence": "3 orders"}]}
    frame.loc[0, "reasons_json"] = json.dumps([cause_line, lowering])
    write_scores(tmp_path, frame)
    row = query(staff, queue="service_complaints")["rows"][0]
    rose_en = "risk rose from 20% to 85% in the week to 4 October 2026" if hasattr(staff.templates, "languages") else None
    assert row["headline"]["cause"] == "complaints"
    assert row["headline"]["evidence"][:2] == ["2 complaints in the last 30 days, 1 still open", "last complaint 12 days ago"]
    zh = staff.customer("C0000", "zh")["customer"]["causes"]
    assert [c["cause"] for c in zh] == ["complaints", "declining_activity"]
    assert zh[0]["contribution"] == pytest.approx(1.1) and zh[1]["direction"] == "lowers"
    assert zh[0]["facts"][1]["sentence"] == "最近一次投诉在12天前" and zh[1]["facts"][0]["sentence"] == "近30天下单3次"
    if rose_en is not None:  # configs/reasons.yaml says how a date reads in each language
        assert row["headline"]["evidence"][-1] == rose_en
        assert zh[0]["rose"].startswith("2026年10月4日")
    assert labels(staff.config, staff.vocab, "zh")["cause"]["complaints"] == "投诉"


def test_scores_without_decision_columns_are_a_clear_error(staff, tmp_path):
    from serving.staff import BadQuery

    scores = tmp_path / "data" / "scores"
    scores.mkdir(parents=True)
    pd.DataFrame({"customer_id": ["x1"], "churn_band": ["high"]}).to_parquet(scores / "latest.parquet")
    with pytest.raises(BadQuery, match="run `propensity score` again"):
        query(staff)


def test_no_scores_yet_is_an_empty_list(staff):
    page = query(staff)
    assert page["rows"] == [] and page["total"] == 0 and page["as_of"] is None
    assert staff.customer("C0000", "en")["found"] is False


# ---------------------------------------------------------------------------------------------- over HTTP
@pytest.fixture(scope="module")
def client(asgi_app, app_home, customers):
    with serve_app(asgi_app, table_fetcher(customers)) as test_client:
        yield test_client


def test_the_routes_over_http(client, app_home):
    write_scores(app_home[0], scores_frame())
    page = client.get("/ui/api/flagged", params={"queue": "service_complaints", "page": 2, "page_size": 20}, headers=KEY)
    assert page.status_code == 200
    body = page.json()
    assert [r["customer_id"] for r in body["rows"]] == [f"C{i:04d}" for i in range(20, 30)]
    assert body["total"] == 30 and body["pages"] == 2 and body["recent"] == []
    default = client.get("/ui/api/flagged", headers=KEY).json()
    assert len(default["rows"]) == 25 and default["page_size"] == 25  # configs/staff_page.yaml
    assert len(page.content) < 20_000  # 10 rows; a page never carries the reasons JSON
    bad = client.get("/ui/api/flagged", params={"queue": "nope"}, headers=KEY)
    assert bad.status_code == 400 and bad.json()["field"] == "queue" and "known:" in bad.json()["error"]
    assert client.get("/ui/api/flagged", params={"page_size": 500}, headers=KEY).status_code == 400
    assert client.get("/ui/api/flagged", params={"queue": "sales"}).status_code == 401
    detail = client.get("/ui/api/customer", params={"id": "C0003", "lang": "zh"}, headers=KEY)
    assert detail.status_code == 200 and detail.json()["customer"]["causes"][0]["cause"] == "complaints"
    ghost = client.get("/ui/api/customer", params={"id": "ghost"}, headers=KEY)
    assert ghost.status_code == 200 and ghost.json()["found"] is False
    assert client.get("/ui/api/customer", headers=KEY).json()["field"] == "id"
    assert client.get("/ui/api/customer", params={"id": "C0003"}).status_code == 401
    labels = client.get("/ui/labels", params={"lang": "zh"})  # open: the page needs them before the key
    assert labels.status_code == 200 and labels.json()["labels"]["queue"]["service_complaints"] == "投诉处理"
    assert labels.json()["choices"]["queue"][0] == "service_vip"
    assert client.get("/ui/labels", params={"lang": "fr"}).status_code == 400


def test_recent_api_calls_are_listed_compact(client, app_home):
    write_scores(app_home[0], scores_frame())
    client.post("/predict", json={"customer_ids": [f"c{i:04d}" for i in range(60)]}, headers=KEY)
    recent = client.get("/ui/api/flagged", params={"page_size": 5}, headers=KEY).json()["recent"]
    assert 0 < len(recent) <= 60  # configs/serving.yaml ui_recent_calls bounds them
    assert all(set(r) == {"customer_id", "seen_at", "action_rule", "queue"} for r in recent)


def test_the_openapi_document_lists_the_list_parameters(client):
    doc = client.get("/docs.json").json()
    params = {p["name"]: p["schema"] for p in doc["paths"]["/ui/api/flagged"]["get"]["parameters"]}
    assert set(params) == {"queue", "action", "segment", "stage", "tag", "q", "page", "page_size", "lang"}
    assert "service_complaints" in params["queue"]["enum"] and params["page_size"]["maximum"] == 100
    assert "400" in doc["paths"]["/ui/api/flagged"]["get"]["responses"]
    assert {"/ui/api/customer", "/ui/labels"} <= set(doc["paths"])


# ---------------------------------------------------------------------------------------------- Chromium
def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip("Debian chromium not installed (CI installs it with apt-get)")
    return path


def served_scores(ids: list[str]) -> pd.DataFrame:
    """A latest list over the served project's real customer ids: 30 in the complaints queue (two pages)."""
    frame = scores_frame(n_complaints=30)
    named = dict(zip(sorted(frame["customer_id"]), ids, strict=False))
    return frame.assign(customer_id=frame["customer_id"].map(named))


def raw_keys_in(text: str, vocab) -> list[str]:
    """Keys of the configs that show in ``text`` as themselves (snake_case or as a whole English word)."""
    shown = []
    for kind, keys in vocab.keys.items():
        for key in keys:
            pattern = re.escape(key) if "_" in key else rf"(?<![A-Za-z]){re.escape(key)}(?![A-Za-z])"
            if re.search(pattern, text, flags=0 if "_" in key else re.IGNORECASE):
                shown.append(f"{kind}.{key}")
    return shown


@pytest.mark.slow
def test_staff_page_in_chromium(server, tmp_path):
    from tests.serving.conftest import SERVER_KEY

    playwright = pytest.importorskip("playwright.sync_api")
    write_scores(server["home"], served_scores(server["ids"]))
    vocab = shipped_vocabulary()
    # Screenshots go to tmp_path; STAFF_SCREENSHOTS=docs/img writes the ones docs/serving.md shows.
    shots = Path(os.environ.get("STAFF_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path(),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 860})
            page.goto(f"{server['base']}/ui")
            page.fill("#apikey", "wrong")
            page.click("#keyform button")
            page.wait_for_selector("#status.error")
            assert "wrong API key" in page.inner_text("#status")
            page.fill("#apikey", SERVER_KEY)
            page.click("#keyform button")
            # The first queue with customers opens by itself; pick another, then the complaints queue.
            page.wait_for_selector("#queues button.current[data-queue=service_complaints]")
            page.click("#queues button[data-queue=marketing_retention]")
            page.wait_for_selector("#queues button.current[data-queue=marketing_retention]")
            page.wait_for_function("document.querySelectorAll('#list tr.row').length === 3")
            page.click("#queues button[data-queue=service_complaints]")
            page.wait_for_function("document.querySelectorAll('#list tr.row').length === 25")
            assert "Complaint service" in page.inner_text("#queues")
            assert "Call to resolve the open complaint" in page.inner_text("#list")
            assert "page 1 of 2" in page.inner_text("#pageinfo")
            first = page.locator("#list tr.row").first
            assert "Complaints" in first.inner_text() and "still open" in first.inner_text()
            page.click("#next")
            page.wait_for_function("document.querySelectorAll('#list tr.row').length === 5")
            assert "page 2 of 2" in page.inner_text("#pageinfo")
            page.click("#prev")
            page.wait_for_function("document.querySelectorAll('#list tr.row').length === 25")
            page.select_option("#f-tag", "high_value")
            page.wait_for_function("document.querySelectorAll('#list tr.row').length === 10")
            page.select_option("#f-tag", "")
            page.wait_for_function("document.querySelectorAll('#list tr.row').length === 25")
            page.screenshot(path=str(shots / "staff-list.png"))
            page.locator("#list tr.row").first.click()
            page.wait_for_selector("#detail svg rect.cause")
            assert page.locator("#detail rect.cause").count() == 3
            assert page.locator("#detail li.fact").count() == 4
            assert "Call to resolve the open complaint" in page.inner_text("#d-action")
            page.select_option("#lang", "zh")
            page.wait_for_function("document.querySelector('#pageinfo').textContent.includes('第 1 页')")
            page.wait_for_function("document.querySelector('#detail').textContent.includes('原因')")
            text = page.inner_text("body")
            assert "投诉处理" in text and "致电解决未结投诉" in text and "最近一次投诉在12天前" in text
            assert raw_keys_in(text, vocab) == []
            page.screenshot(path=str(shots / "staff-detail-zh.png"))
            # Someone not in the latest list: the live answer of /predict, in Chinese too.
            page.fill("#f-q", server["ids"][-1])
            page.click("#filters button")
            page.wait_for_selector("#detail #live")
            page.wait_for_selector("#detail svg rect.cause")
            assert raw_keys_in(page.inner_text("#detail"), vocab) == []
        finally:
            browser.close()
