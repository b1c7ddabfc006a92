"""The Ray engine gives the local engine's answers: a small project (bench.bench_score's set-up: feature
snapshots, events, two LightGBM champions in MLflow, Feast) scored by `serving.batch.score` on both
engines, the Ray one on a local Ray cluster with 2 CPUs and 2 workers, compared row by row and byte by
byte. The copied actions.yaml adds what ranks the whole population (a top-fraction layer, a small queue
capacity) and small batches, so a per-batch decision or a lost or reordered batch would show."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from core.errors import PropensityError
from tests.conftest import new_project

CUSTOMERS = 3000


def write_past_snapshots(weeks: int) -> None:
    """Feature snapshots 1..``weeks`` weeks before the bench's as-of date, other values, same customers."""
    from bench.bench_score import AS_OF, synthetic_views
    from core.settings import project_paths
    from features.build import write_snapshot

    for k in range(1, weeks + 1):
        day = AS_OF - pd.Timedelta(weeks=k)
        frames = synthetic_views(CUSTOMERS, seed=10 + k)
        for frame in frames.values():
            frame["event_timestamp"] = pd.Series(day, index=frame.index).astype("datetime64[us, UTC]")
        write_snapshot(project_paths().feature_sources, day.date(), frames)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    from bench.bench_score import AS_OF, setup
    from core.settings import SCORES_CSV, SCORES_FILE
    from serving.batch import FEATURE_SNAPSHOT, score
    from serving.causes import past_file

    home, mp = new_project(tmp_path_factory.mktemp("ray_engine"))
    mp.delenv("RAY_ADDRESS", raising=False)  # a local Ray, whatever the machine has
    try:
        path = home / "configs" / "actions.yaml"
        cfg = yaml.safe_load(path.read_text())
        cfg["layers"]["activity"] = {"column": "active_days_90d", "high_top_fraction": 0.3}
        cfg["queues"] = {"service_vip": {"capacity": 5}, "marketing_retention": {"capacity": 40}}
        cfg["scoring"]["ray"] = {"num_cpus": 2, "workers": 2, "cpus_per_worker": 1, "batch_rows": 400}
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        setup(CUSTOMERS, trees=15, seed=3, max_depth=5, num_leaves=15)
        write_past_snapshots(weeks=2)  # the churn causes are ranked with the customers' past
        out = {}
        for engine in ("local", "ray"):
            result = score(AS_OF, engine=engine)
            out[engine] = (
                result,
                pd.read_parquet(result.scores_dir / SCORES_FILE),
                (result.scores_dir / SCORES_CSV).read_bytes(),
                (result.scores_dir / FEATURE_SNAPSHOT).read_bytes(),
                pd.read_parquet(past_file(result.scores_dir, "churn")),
            )
        yield out
    finally:
        mp.undo()


@pytest.mark.slow
def test_ray_engine_gives_the_local_engines_answers_row_by_row(scored):
    local, local_frame, local_csv, local_snapshot, local_past = scored["local"]
    ray, ray_frame, ray_csv, ray_snapshot, ray_past = scored["ray"]

    # The run is one worth comparing: both models, many customers with an action and reasons, full and
    # over-capacity queues, a control group, and the Ray run split into many batches over 2 workers.
    assert local.rows == CUSTOMERS and set(local.model_versions) == {"churn", "conversion"}
    ruled = ~local_frame["action_rule"].isin(["", "lost"])  # a rule's rows carry its model's reasons
    assert ruled.sum() > 2 * 400 and (local_frame.loc[ruled, "reasons"] != "").mean() > 0.95
    assert {"in queue", "over capacity"} <= set(local_frame["queue_status"])
    assert {"treatment", "control"} <= set(local_frame["group"])
    assert ray.times.notes["ray"].startswith("2 workers x 1 CPUs (2 CPUs in the cluster)")
    # The driver ran no TreeSHAP: every ranking (the rule's, then the reasons') went through the workers.
    assert {"causes: TreeSHAP (ray, churn)", "reasons: text + JSON (ray, churn)"} <= set(ray.times.stages)
    assert "reasons: SHAP" not in ray.times.stages

    # Row by row: ids, scores, bands, layers, tags, reasons, actions, group, priority, queue status.
    assert list(ray_frame.columns) == list(local_frame.columns)
    for col in ("customer_id", "churn_probability", "conversion_probability", "churn_band", "layer_activity",
                "reasons", "reasons_json", "action", "queue", "action_rule", "group", "priority", "queue_status"):
        pd.testing.assert_series_equal(ray_frame[col], local_frame[col], check_names=True, obj=col)
    pd.testing.assert_frame_equal(ray_frame, local_frame)
    # And the files the CRM and monitoring read are the same bytes.
    assert ray_csv == local_csv
    assert ray_snapshot == local_snapshot
    assert (ray.flagged, ray.by_action) == (local.flagged, local.by_action)
    # The past the ranking read (saved for /predict) came back from the workers: the same rows and values.
    assert local_past["date"].nunique() == 3 and local_past["customer_id"].nunique() > 2 * 400
    pd.testing.assert_frame_equal(ray_past, local_past)


def test_a_ranking_travels_as_columns_and_back_exactly():
    from serving.ray_engine import pack_ranking, unpack_ranking
    from training.reasons import History

    rng = np.random.default_rng(0)
    dates, rows, causes = 4, 7, ("recency", "complaints/service", "spend")
    contributions = rng.normal(size=(rows, 5))
    contributions[2, 1] = np.nan
    for events in (rng.random((dates - 1, rows, len(causes))) < 0.3, None):
        history = History([pd.Timestamp("2011-09-10", tz="UTC") + pd.Timedelta(days=7 * d) for d in range(dates)],
                          rng.normal(size=(dates, rows)), rng.random((dates, rows)),
                          rng.normal(size=(dates, rows, len(causes))), rng.random((dates, rows)) < 0.8, causes,
                          events)
        got, back = unpack_ranking(pd.DataFrame(pack_ranking(contributions, history)))
        np.testing.assert_array_equal(got, contributions)
        assert back.dates == history.dates and back.causes == causes
        for field in ("raw", "probabilities", "cause_sums", "present", "events"):
            want, have = getattr(history, field), getattr(back, field)
            if want is None:
                assert have is None
            else:
                assert have.dtype == want.dtype
                np.testing.assert_array_equal(have, want)
    got, back = unpack_ranking(pd.DataFrame(pack_ranking(contributions, None)))
    np.testing.assert_array_equal(got, contributions)
    assert back is None


def test_an_unknown_engine_is_named(project_home):
    from serving.batch import score

    with pytest.raises(PropensityError, match="--engine: 'spark' is not one of local, ray"):
        score("2026-10-31", engine="spark")


def test_score_has_an_engine_option():
    from pipelines.cli import app

    result = CliRunner().invoke(app, ["score", "--help"])
    assert result.exit_code == 0 and "--engine" in result.output
