"""Quality comparison: the value spec's Tweedie regression (as shipped, from its boost_from start) against a
two-part model, P(buy) x E[spend | buy] (LightGBM binary x LightGBM gamma on the buyers), on the backtest's
data: trained on the history before --as-of, measured on the spend after it (issue 12: "Tweedie or a
two-part model; choose by measurement").

    PROPENSITY_HOME=H .venv/bin/python -m bench.bench_value_models --as-of 2026-05-04 [--trials 12]

Needs a project home with events and features (`propensity ingest`, `propensity features build`) and a
D whose value labels have matured. Each model (each part of the two-part model) is tuned as the shipped
model is: TPE with the spec's seed and start-up trials, --trials trials over the spec's search space
(without tweedie_variance_power for the parts), early stopping on the validation split (Tweedie deviance;
log loss; gamma deviance on the buyers). Prints normalised Gini and top-10% spend capture at D with
percentile-bootstrap intervals and the paired interval of two-part minus each scorer (1000 resamples),
MAE and mean prediction, beside BG/NBD x Gamma-Gamma. Nothing is logged or registered.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
import warnings

import numpy as np


def _tuned(spec, feature_names, objective: str, metric: str, train, valid, space: dict, trials: int,
           init=(None, None)):
    """A booster of ``objective`` tuned on ``valid`` (TPE over ``space``, early stopping on ``metric``)."""
    import lightgbm as lgb
    import optuna

    from training.tune import base_params, suggest

    tuning = spec.tuning
    dtrain = lgb.Dataset(*train, init_score=init[0], params={"feature_pre_filter": False, "verbosity": -1},
                         free_raw_data=False)
    dvalid = lgb.Dataset(*valid, reference=dtrain, init_score=init[1], free_raw_data=False)

    def fit(params: dict):
        params = {**base_params(tuning, tuning.seed, feature_names, "regression"), **params,
                  "objective": objective, "metric": metric}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*Overriding the parameters from Reference Dataset.*")
            return lgb.train(params, dtrain, tuning.max_boost_rounds, valid_sets=[dvalid],
                             callbacks=[lgb.early_stopping(tuning.early_stopping_rounds, verbose=False)])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(
        seed=tuning.seed, n_startup_trials=tuning.startup_trials))
    study.optimize(lambda trial: float(fit(suggest(trial, space)).best_score["valid_0"][metric]), n_trials=trials)
    return fit(study.best_params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--as-of", required=True, help="D, YYYY-MM-DD: train before it, measure after it")
    parser.add_argument("--trials", type=int, default=12, help="Optuna trials per model (per part)")
    parser.add_argument("--model", default="value", help="the regression spec to compare (configs/models)")
    args = parser.parse_args()
    from core.settings import project_paths, quiet_environment

    quiet_environment()
    logging.basicConfig(level=logging.WARNING)

    import pandas as pd

    from core.events import EventStore
    from core.specs import load_spec
    from features.exact import exact_historical_features
    from training.backtest import bootstrap_amounts, btyd_spend_scores, history_spec, weighted_normalized_gini
    from training.dataset import ExactFeatureSource
    from training.labels import TEST, TRAIN, VALIDATION, build_labels
    from training.train import boost_from, build_training_set, start_scores

    as_of = dt.date.fromisoformat(args.as_of)
    spec = load_spec(args.model)
    started = time.perf_counter()
    ts = build_training_set(history_spec(spec, as_of), ExactFeatureSource())
    start = boost_from(spec, ts)
    store = EventStore(project_paths().events)
    cutoff = pd.Series([pd.Timestamp(as_of, tz="UTC")]).astype("datetime64[us, UTC]")
    rows = build_labels(store, spec.labels, pd.DataFrame({"cutoff": cutoff, "split": [TEST]}))
    y = rows["label"].to_numpy(dtype=np.float64)
    feats = exact_historical_features(rows[["customer_id", "event_timestamp"]], spec.feature_service)
    at_d = feats.reset_index(drop=True)[ts.feature_names].astype(float)
    _, _, expected = btyd_spend_scores(store, as_of, spec.labels.horizon_days, rows["customer_id"])
    X = {s: ts.X(s) for s in (TRAIN, VALIDATION, TEST)}
    Y = {s: ts.y(s).astype(np.float64) for s in (TRAIN, VALIDATION, TEST)}
    prepared = time.perf_counter() - started

    started = time.perf_counter()
    if start is None:
        init, offset = (None, None), (lambda Z: 0.0)
    else:
        init, offset = (start_scores(start, X[TRAIN]), start_scores(start, X[VALIDATION])), (lambda Z: start_scores(start, Z))
    tweedie = _tuned(spec, ts.feature_names, "tweedie", "tweedie", (X[TRAIN], Y[TRAIN]), (X[VALIDATION], Y[VALIDATION]),
                     spec.tuning.search_space, args.trials, init)

    def tweedie_predict(Z):
        return np.exp(tweedie.predict(Z, raw_score=True, num_iteration=tweedie.best_iteration) + offset(Z))

    tweedie_s = time.perf_counter() - started
    started = time.perf_counter()
    parts_space = {k: v for k, v in spec.tuning.search_space.items() if k != "tweedie_variance_power"}
    buys = {s: (Y[s] > 0).astype(np.float64) for s in Y}
    classifier = _tuned(spec, ts.feature_names, "binary", "binary_logloss", (X[TRAIN], buys[TRAIN]),
                        (X[VALIDATION], buys[VALIDATION]), parts_space, args.trials)
    tr, va = Y[TRAIN] > 0, Y[VALIDATION] > 0
    amount = _tuned(spec, ts.feature_names, "gamma", "gamma", (X[TRAIN][tr], Y[TRAIN][tr]),
                    (X[VALIDATION][va], Y[VALIDATION][va]), parts_space, args.trials)

    def two_part_predict(Z):
        return (classifier.predict(Z, num_iteration=classifier.best_iteration)
                * amount.predict(Z, num_iteration=amount.best_iteration))

    two_part_s = time.perf_counter() - started

    def gini(values, score):
        return float(weighted_normalized_gini(values, score, np.ones((1, len(values))))[0])

    print(f"{spec.name} at {as_of}: {len(y):,} customers ({(y > 0).mean():.2f} buy in {spec.labels.horizon_days} "
          f"days); training set {len(Y[TRAIN]):,} train / {len(Y[VALIDATION]):,} validation rows ({prepared:.0f} s)")
    print(f"tuned, {args.trials} trials per model: Tweedie {tweedie_s:.0f} s ({tweedie.best_iteration} trees, "
          f"start {'from ' + spec.boost_from if start is not None else 'none'}); two-part {two_part_s:.0f} s "
          f"({classifier.best_iteration} + {amount.best_iteration} trees)")
    print(f"internal test split Gini (before D): Tweedie {gini(Y[TEST], tweedie_predict(X[TEST])):.4f}, "
          f"two-part {gini(Y[TEST], two_part_predict(X[TEST])):.4f}")
    scores = {"two-part": two_part_predict(at_d), "Tweedie": tweedie_predict(at_d),
              "BG/NBD x Gamma-Gamma": np.where(np.isfinite(expected), expected, 0.0)}
    stats = bootstrap_amounts(y, scores, reference="two-part")
    for name, entry in stats.items():
        line = (f"{name:22s} Gini {entry['normalized_gini']:.4f} [{entry['normalized_gini_ci'][0]:.4f}, "
                f"{entry['normalized_gini_ci'][1]:.4f}]  top-10% capture {entry['capture_top10']:.4f}  "
                f"MAE {np.mean(np.abs(scores[name] - y)):.2f}  mean {scores[name].mean():.1f} (realised {y.mean():.1f})")
        if name != "two-part":
            gd, gc = entry["normalized_gini_diff"], entry["normalized_gini_diff_ci"]
            cd, cc = entry["capture_top10_diff"], entry["capture_top10_diff_ci"]
            line += f"\n{'':22s} two-part minus this: Gini {gd:+.4f} [{gc[0]:+.4f}, {gc[1]:+.4f}], capture {cd:+.4f} [{cc[0]:+.4f}, {cc[1]:+.4f}]"
        print(line)


if __name__ == "__main__":
    main()
