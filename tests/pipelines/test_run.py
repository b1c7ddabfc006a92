"""End to end on generated data (slow): one `propensity run --size tiny` chain whose generated behaviour
shifts on 2026-09-15, then: scores per the contract, monitoring before and after the shift, a failing
stage that leaves champions / online store / scores as they were and `--resume`, `retrain --if-needed`
when nothing is wrong, and `forget` including the online store."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
import yaml

from core.errors import PropensityError
from core.settings import project_paths
from tests.conftest import new_project

pytestmark = pytest.mark.slow

SHIFT = dt.date(2026, 9, 15)  # after the churn holdout cutoff (60-day horizon before 2026-11-01)
BEFORE_SHIFT = "2026-09-05"
MATURED = "2026-08-23"  # + 60 days is inside the data: realised AUC is defined


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A project after `propensity run --size tiny` with a behaviour shift, plus two earlier scorings."""
    home, mp = new_project(tmp_path_factory.mktemp("e2e"))
    configs = home / "configs"
    # A clear behaviour change (fewer visits and purchases, smaller baskets, many more complaints): the
    # default shift is mild enough that 1,500 customers do not cross the usual PSI thresholds.
    generator = yaml.safe_load((configs / "generate.yaml").read_text())
    generator["shift"] = {"entry": 0.5, "visit": 0.5, "purchase": 0.5, "complaint": 5.0, "amount": 0.6, "churn": 2.0}
    (configs / "generate.yaml").write_text(yaml.safe_dump(generator))
    from pipelines.run import load_run_config, run
    from serving.batch import score

    cfg = load_run_config().model_copy(update={"shift_at": SHIFT})
    state = run("tiny", cfg=cfg)
    earlier = {d: score(d) for d in (MATURED, BEFORE_SHIFT)}
    yield {"home": home, "configs": configs, "state": state, "cfg": cfg, "earlier": earlier}
    mp.undo()


def test_run_summary_and_scores_contract(chain):
    from core.specs import load_spec
    from pipelines.run import stage_names, summary_tables
    from serving.actions import STAKE_COLUMNS
    from serving.batch import score_columns

    # The scored models' numbers (probabilities, the value model's amount) and, with the value model, the stakes.
    scored_models = chain["state"].stages["score"]["facts"]["model_versions"]
    assert {"churn", "conversion"} <= set(scored_models)
    SCORE_COLUMNS = score_columns({m: load_spec(m).task for m in scored_models},
                                  list(STAKE_COLUMNS) if "value" in scored_models else [])

    state = chain["state"]
    assert [s for s in stage_names() if state.stages[s]["status"] == "done"] == stage_names()
    promote = state.stages["promote"]["facts"]
    assert promote["churn"]["decision"] == "promoted" and promote["conversion"]["decision"] == "promoted"
    scored = state.stages["score"]["facts"]
    assert scored["as_of"] == "2026-11-01" and scored["rows"] > 500 and 0 < scored["flagged"] < scored["rows"]
    assert len(summary_tables(state, chain["cfg"].serve_hint)) == 5

    paths = project_paths()
    latest = pd.read_parquet(paths.scores / "latest.parquet")
    assert list(latest.columns) == SCORE_COLUMNS
    pd.testing.assert_frame_equal(latest, pd.read_parquet(paths.scores / "2026-11-01" / "scores.parquet"))
    csv = pd.read_csv(paths.scores / "2026-11-01" / "scores.csv", keep_default_na=False)
    assert len(csv) == len(latest) and list(csv.columns) == SCORE_COLUMNS
    from serving.actions import LOST_RULE, load_actions_config

    # Every customer a rule picked (treated or held out as control) carries the reasons of the rule's
    # model; the lost ones get no model-driven text.
    ruled = latest["action_rule"].isin([r.name for r in load_actions_config().rules])
    assert ruled.any() and (latest.loc[ruled, "reasons"].str.len() > 0).all()
    assert (latest.loc[latest["action_rule"] == LOST_RULE, "reasons"] == "").all()
    assert set(latest["lifecycle_stage"]) <= {"new", "active", "at_risk", "lapsed"}
    assert latest["rfm_segment"].notna().all()
    # Only active customers are scored: every scored id has an event in the 365 days before as-of.
    assert latest["customer_id"].is_unique


@pytest.mark.behaviour
def test_predict_ranks_causes_as_the_batch_list_of_the_same_date(chain):
    """Both models' causes ranked from the customer's past (churn: weekly snapshots; conversion: the last
    days, against the scale stored at training): /predict reads the past the batch run saved and gives
    every customer of the list the same tags, top cause, rule, action, queue and reasons."""
    import json

    from serving.causes import past_file
    from serving.config import load_serving_config, served_models
    from serving.predictor import Predictor
    from serving.registry import ModelRegistry
    from serving.requests import PredictRequest

    scores = pd.read_parquet(project_paths().latest_scores).set_index("customer_id")
    as_of = scores["as_of"].iloc[0]
    for model in ("churn", "conversion"):
        assert past_file(project_paths().scores_for(as_of), model).is_file(), model
    explained = scores["reasons_json"].map(lambda j: json.loads(j)[0]["model"] if j != "[]" else "")
    ids = [*scores.index[explained == "conversion"][:30], *scores.index[explained == "churn"][:30],
           *scores.index[explained == ""][:10]]
    assert (explained.loc[ids] == "conversion").sum() >= 5
    config = load_serving_config()
    registry = ModelRegistry(served_models(config))
    registry.load()
    answer = Predictor(config, registry).predict(PredictRequest(customer_ids=ids))
    for result in answer["results"]:
        row, decision = scores.loc[result["customer_id"]], result["decision"]
        for key in ("tags", "top_cause", "action_rule", "action", "queue", "group", "queue_status"):
            assert decision[key] == row[key], (result["customer_id"], key)
        assert (decision["priority"] is None and pd.isna(row["priority"])) or \
            decision["priority"] == pytest.approx(row["priority"], rel=1e-9), result["customer_id"]
        model = explained.loc[result["customer_id"]]
        if model:
            batch = [(r["cause"], r["direction"], r["rose"]) for r in json.loads(row["reasons_json"])]
            served = [(r["cause"], r["direction"], r.get("rose")) for r in result[model]["reasons"]]
            assert served == batch[:len(served)], result["customer_id"]


def test_monitor_sees_the_shift_and_not_before_it(chain):
    from pipelines.monitor import load_monitor_config, monitor

    thresholds = load_monitor_config().thresholds
    before = monitor(as_of=BEFORE_SHIFT)
    churn_before = next(s for s in before.signals if s.model == "churn")
    assert (churn_before.drift["psi"] > thresholds.feature_psi).sum() <= thresholds.max_drifted_features
    assert not any(r.startswith("churn") for r in before.verdict.reasons)

    after = monitor()
    churn_after = next(s for s in after.signals if s.model == "churn")
    drifted = churn_after.drift[churn_after.drift["psi"] > thresholds.feature_psi]["feature"].tolist()
    assert after.verdict.retrain
    assert any(r.startswith("churn") for r in after.verdict.reasons), after.verdict.reasons
    assert len(drifted) > thresholds.max_drifted_features, churn_after.drift.head(8)
    assert churn_after.score_psi > churn_before.score_psi

    # Realised AUC of the scores whose labels have matured (2026-08-23 + 60 days < data end).
    realised = churn_after.realised.dropna(subset=["auc"])
    assert f"{realised['as_of'].iloc[0]:%Y-%m-%d}" == MATURED
    assert realised["auc"].iloc[0] > 0.6
    html = after.report.read_text()
    assert "RETRAIN" in html and "churn_feature_psi.png" in html and (after.report.parent / "churn_realised_auc.png").exists()
    # MLflow got aggregates, never a customer id.
    from training.tracking import client

    run = client().get_run(after.mlflow_run_id)
    assert run.data.metrics["retrain"] == 1.0 and "churn_max_feature_psi" in run.data.metrics
    ids = set(pd.read_parquet(project_paths().scores / "latest.parquet")["customer_id"])
    logged = " ".join([*run.data.params.values(), *run.data.tags.values(), html])
    assert not any(f" {i} " in f" {logged} " or f">{i}<" in logged for i in list(ids)[:200])


def test_failed_stage_leaves_everything_and_resume_continues(chain):
    from pipelines.run import load_run_config, run
    from training.champion import load_model_version

    paths = project_paths()
    champions = {m: load_model_version(m).version for m in ("churn", "conversion")}
    latest_before = (paths.scores / "latest.parquet").read_bytes()
    online_before = paths.online_store.stat().st_mtime_ns
    actions = chain["configs"] / "actions.yaml"
    good = actions.read_text()
    broken = yaml.safe_load(good)
    broken["rules"][0]["when"] = {"at_least": {"no_such_column": 1}}
    actions.write_text(yaml.safe_dump(broken))
    try:
        with pytest.raises(PropensityError, match="stage 'score' failed.*no_such_column"):
            run(only=["score", "report"], cfg=load_run_config())
    finally:
        actions.write_text(good)
    assert {m: load_model_version(m).version for m in champions} == champions
    assert (paths.scores / "latest.parquet").read_bytes() == latest_before
    assert paths.online_store.stat().st_mtime_ns == online_before

    resumed = run(resume=True, cfg=load_run_config())
    assert resumed.selected == ["score", "report"]
    assert resumed.stages["score"]["status"] == "done" and resumed.stages["report"]["status"] == "done"
    assert "generate" not in resumed.stages  # a resumed run keeps the stages it was started with


def test_retrain_if_needed_does_nothing_when_monitoring_is_happy(chain):
    from pipelines.run import retrain
    from training.champion import load_model_version

    monitor_yaml = chain["configs"] / "monitor.yaml"
    original = monitor_yaml.read_text()
    lenient = yaml.safe_load(original)
    lenient["thresholds"] = {"feature_psi": 50, "score_psi": 50, "min_realised_auc": 0.01, "max_auc_drop": 0.99,
                             "max_drifted_features": 100}
    monitor_yaml.write_text(yaml.safe_dump(lenient))
    try:
        versions = {m: load_model_version(m).version for m in ("churn", "conversion")}
        checked, state = retrain(if_needed=True)
    finally:
        monitor_yaml.write_text(original)
    assert checked is not None and not checked.verdict.retrain and state is None
    assert {m: load_model_version(m).version for m in versions} == versions


def test_forget_reaches_the_online_store(chain):
    from core.events import EventStore
    from features.retrieval import online_features
    from pipelines.forget import forget

    paths = project_paths()
    # A customer whose causes the last list ranked: in the scores and in the past saved for /predict.
    latest = pd.read_parquet(paths.scores / "latest.parquet")
    ranked = pd.read_parquet(paths.scores_for(latest["as_of"].iloc[0]) / "ranking_past_churn.parquet")
    victim = ranked["customer_id"].iloc[0]
    assert victim in set(latest["customer_id"])
    assert online_features([victim], "churn_v1")["found"].iloc[0]
    report = forget([victim])
    assert not online_features([victim], "churn_v1")["found"].iloc[0]
    assert any(k.startswith("online store (sqlite)") for k in report.removed)
    assert any(k.startswith("event store") for k in report.removed)
    assert any(k.startswith("feature sources") for k in report.removed)
    for table in ("orders", "page_views", "customers"):
        assert victim not in set(EventStore(paths.events).read(table, columns=["customer_id"])["customer_id"])
    for folder in paths.scores.glob("20*"):
        assert victim not in set(pd.read_parquet(folder / "scores.parquet")["customer_id"])
        for past in folder.glob("ranking_past_*.parquet"):  # the past /predict ranks from
            assert victim not in set(pd.read_parquet(past)["customer_id"]), past.name
    assert victim not in set(pd.read_parquet(paths.scores / "latest.parquet")["customer_id"])
    assert report.mlflow_hits == [] and report.not_found == []
