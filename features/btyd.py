"""BG/NBD ("buy till you die", Fader, Hardie and Lee 2005, "Counting your customers the easy way"):
a customer buys at a Poisson rate lambda ~ Gamma(r, alpha) and, after each repeat purchase, drops out
for good with probability p ~ Beta(a, b). Fitted by maximum likelihood from each customer's summary
(x repeat purchases, recency t_x = time of the last purchase after the first, age T = time since the
first), all in one time unit (days here).

Written out with scipy rather than taken from pymc-marketing's CLV module: the maintained 1.x line
needs Python >= 3.12 (this project is 3.11), the 0.18 line that resolves with the project's pins pulls
in pymc, pytensor (with a C++ compiler at run time), arviz, xarray and h5py for four closed-form formulas,
and costs about 10 s to import plus a 30 s first compile on every fresh machine. The likelihood and the
conditional expectation are the paper's; P(alive) is from Fader, Hardie and Lee's note "Computing
P(alive) using the BG/NBD model". Tests recover known parameters from data simulated with ``simulate``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from core.errors import PropensityError


@dataclass(frozen=True)
class BGNBD:
    """Fitted BG/NBD parameters (time unit: the one the data was given in)."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float = float("nan")  # total over the customers fitted
    customers: int = 0
    converged: bool = True

    def params(self) -> dict:
        return asdict(self)

    def p_alive(self, x, t_x, T) -> np.ndarray:
        """P(still active at T | x, t_x, T). A customer with no repeat purchase is alive:
        in the model a dropout can only follow a repeat purchase."""
        x, t_x, T = _arrays(x, t_x, T)
        return 1.0 / (1.0 + self._odds_dead(x, t_x, T))

    def expected_purchases(self, t: float, x, t_x, T) -> np.ndarray:
        """E[purchases in (T, T + t] | x, t_x, T] (the paper's conditional expectation)."""
        from scipy.special import hyp2f1

        x, t_x, T = _arrays(x, t_x, T)
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        if abs(a - 1.0) < 1e-9:
            a = 1.0 + 1e-9  # the formula's (a - 1) pole; the limit is finite, the nudge changes nothing visible
        z = t / (alpha + T + t)
        hyp = hyp2f1(r + x, b + x, a + b + x - 1.0, z)
        ratio = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t)))
        head = (a + b + x - 1.0) / (a - 1.0) * (1.0 - ratio * hyp)
        return head / (1.0 + self._odds_dead(x, t_x, T))

    def p_no_purchase(self, t: float, x, t_x, T) -> np.ndarray:
        """P(no purchase in (T, T + t] | x, t_x, T): gone already, or alive and the Poisson-Gamma rate
        gives no purchase in t, (1 - P(alive)) + P(alive) ((alpha + T) / (alpha + T + t)) ** (r + x)."""
        x, t_x, T = _arrays(x, t_x, T)
        alive = self.p_alive(x, t_x, T)
        quiet = np.exp((self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + T + t)))
        return (1.0 - alive) + alive * quiet

    def _odds_dead(self, x, t_x, T) -> np.ndarray:
        # a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x) for x > 0, else 0; in logs (large x).
        with np.errstate(divide="ignore", invalid="ignore"):
            log_odds = (np.log(self.a) - np.log(np.maximum(self.b + x - 1.0, 1e-300))
                        + (self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + t_x)))
        return np.where(x > 0, np.exp(np.minimum(log_odds, 700.0)), 0.0)


def _arrays(x, t_x, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > T):
        raise PropensityError("BG/NBD summary needs x >= 0 and 0 <= t_x <= T")
    return x, t_x, T


def log_likelihood(params: tuple[float, float, float, float], x, t_x, T) -> np.ndarray:
    """Per-customer log-likelihood of (x, t_x, T), the paper's closed form, in logs."""
    from scipy.special import gammaln

    r, alpha, a, b = params
    x, t_x, T = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    head = (gammaln(r + x) - gammaln(r) + r * np.log(alpha)
            + gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x))
    alive = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        dead = np.log(a) - np.log(np.maximum(b + x - 1.0, 1e-300)) - (r + x) * np.log(alpha + t_x)
    dead = np.where(x > 0, dead, -np.inf)
    return head + np.logaddexp(alive, dead)


def fit(x, t_x, T) -> BGNBD:
    """Maximum-likelihood BG/NBD on customer summaries (L-BFGS-B on the log-parameters, so they stay
    positive). Identical summaries are pooled with a weight: daily data repeats them a lot. Always from
    the same start: a and b often lie on a flat ridge of the likelihood, where another start ends
    elsewhere, so the same history must give the same fit (a snapshot built alone or in a backfill)."""
    from scipy.optimize import minimize

    x, t_x, T = _arrays(x, t_x, T)
    if len(x) < 10:
        raise PropensityError(f"BG/NBD needs at least 10 customers with a purchase, got {len(x)}")
    if not np.any(x > 0):
        raise PropensityError("BG/NBD cannot be fitted: no customer has a repeat purchase")
    rows, weights = np.unique(np.column_stack([x, t_x, T]), axis=0, return_counts=True)
    ux, ut, uT = rows.T
    total = weights.sum()

    def objective(theta: np.ndarray) -> float:
        ll = log_likelihood(tuple(np.exp(theta)), ux, ut, uT)
        value = -(weights * ll).sum() / total
        return float(value) if np.isfinite(value) else 1e300

    # Start at r = a = b = 1 with alpha on the data's time scale (alpha is a scale parameter: its
    # order of magnitude is the typical time between purchases, which depends on the unit).
    theta0 = np.array([0.0, np.log(max(float(np.mean(T)), 1e-3)), 0.0, 0.0])
    res = minimize(objective, theta0, method="L-BFGS-B", bounds=[(-12.0, 12.0)] * 4,
                   options={"maxiter": 2000})
    r, alpha, a, b = (float(v) for v in np.exp(res.x))
    if not np.isfinite(res.fun) or res.fun >= 1e300:
        raise PropensityError(f"BG/NBD fit failed: {res.message}")
    return BGNBD(r, alpha, a, b, log_likelihood=float(-res.fun * total), customers=int(total),
                 converged=bool(res.success))


def simulate(n: int, r: float, alpha: float, a: float, b: float, T, seed: int = 0):
    """Customer summaries (x, t_x, T) drawn from the BG/NBD process itself, for tests: each customer
    buys at Poisson times with rate lambda ~ Gamma(r, 1/alpha) and drops out at the J-th repeat purchase,
    J ~ Geometric(p), p ~ Beta(a, b)."""
    rng = np.random.default_rng(seed)
    T = np.broadcast_to(np.asarray(T, dtype=np.float64), (n,)).copy()
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    last_purchase = rng.geometric(p)  # the repeat purchase after which the customer is gone
    x, t_x, clock = np.zeros(n), np.zeros(n), np.zeros(n)
    active = np.ones(n, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        clock[idx] += rng.exponential(1.0 / lam[idx])
        bought = clock[idx] <= T[idx]
        hit = idx[bought]
        x[hit] += 1
        t_x[hit] = clock[hit]
        # Out of the window, or that purchase was the last one: no further purchases to draw.
        active[idx[~bought]] = False
        active[hit[x[hit] >= last_purchase[hit]]] = False
    return x, t_x, T


# ---- Gamma-Gamma spend per purchase ----------------------------------------------------------------
# Fader, Hardie and Lee (2005), "RFM and CLV: using iso-value curves for customer base analysis", and
# Fader and Hardie's note "The Gamma-Gamma model of monetary value" (2013): each purchase of a customer
# is worth z ~ Gamma(p, nu) (shape p, rate nu), and nu ~ Gamma(q, gamma) across customers; a customer's
# mean value over x purchases is the sufficient statistic. Paired with BG/NBD (which predicts how many
# purchases), E[spend in the next t] = E[purchases in t] x E[value per purchase | x, mean value], the
# usual assumption that how often and how much are independent. The same scipy route as BG/NBD above.
@dataclass(frozen=True)
class GammaGamma:
    """Fitted Gamma-Gamma parameters (money in the unit of the data)."""

    p: float
    q: float
    gamma: float
    log_likelihood: float = float("nan")
    customers: int = 0
    converged: bool = True

    def params(self) -> dict:
        return asdict(self)

    @property
    def mean_value(self) -> float:
        """The population's mean value per purchase, p * gamma / (q - 1) (infinite unless q > 1)."""
        return self.p * self.gamma / (self.q - 1.0) if self.q > 1.0 else float("inf")

    def expected_value(self, x, mean_value) -> np.ndarray:
        """E[value of a purchase | x purchases averaging ``mean_value``]: a weighted mean of the population
        mean and the customer's own, p (gamma + x m) / (p x + q - 1). A customer without a usable purchase
        (x = 0, or a mean <= 0, e.g. refunds) gets the population mean."""
        x = np.asarray(x, dtype=np.float64)
        m = np.asarray(mean_value, dtype=np.float64)
        usable = (x > 0) & (m > 0) & np.isfinite(m)
        xs, ms = np.where(usable, x, 0.0), np.where(usable, m, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            own = self.p * (self.gamma + xs * ms) / (self.p * xs + self.q - 1.0)
        return np.where(usable, own, self.mean_value)


def gamma_gamma_log_likelihood(params: tuple[float, float, float], x, mean_value) -> np.ndarray:
    """Per-customer log-likelihood of the mean value ``mean_value`` of ``x`` purchases (x >= 1, m > 0):
    the mean of x Gamma(p, nu) values is Gamma(p x, x nu), and nu integrates out against Gamma(q, gamma)."""
    from scipy.special import gammaln

    p, q, g = params
    x = np.asarray(x, dtype=np.float64)
    m = np.asarray(mean_value, dtype=np.float64)
    px = p * x
    return (gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(g) + (px - 1.0) * np.log(m)
            + px * np.log(x) - (px + q) * np.log(g + x * m))


_LOG_Q_BOUND = 12.0  # log q searched within +-this


def fit_gamma_gamma(x, mean_value) -> GammaGamma:
    """Maximum-likelihood Gamma-Gamma on the customers with x >= 1 purchases of positive mean value
    (the others carry no information on the spread of values). L-BFGS-B on log-parameters."""
    from scipy.optimize import minimize

    x = np.asarray(x, dtype=np.float64)
    m = np.asarray(mean_value, dtype=np.float64)
    keep = (x > 0) & (m > 0) & np.isfinite(m)
    if keep.sum() < 10:
        raise PropensityError(f"Gamma-Gamma needs at least 10 customers with a repeat purchase of positive value, "
                              f"got {int(keep.sum())}")
    x, m = x[keep], m[keep]

    def objective(theta: np.ndarray) -> float:
        value = -gamma_gamma_log_likelihood(tuple(np.exp(theta)), x, m).mean()
        return float(value) if np.isfinite(value) else 1e300

    # p = 1, q = 2 and gamma = the mean value: a population mean value per purchase equal to the data's.
    start = np.array([0.0, np.log(2.0), np.log(float(m.mean()))])
    res = minimize(objective, start, method="L-BFGS-B",
                   bounds=[(-12.0, 12.0), (-_LOG_Q_BOUND, _LOG_Q_BOUND), (-30.0, 30.0)],
                   options={"maxiter": 2000})
    if not np.isfinite(res.fun) or res.fun >= 1e300:
        raise PropensityError(f"Gamma-Gamma fit failed: {res.message}")
    p, q, g = (float(v) for v in np.exp(res.x))
    fitted = GammaGamma(p, q, g, log_likelihood=float(-res.fun * len(x)), customers=int(len(x)),
                        converged=bool(res.success))
    # Values without a spending level per customer (one price for everyone, say) have their best fit at
    # q -> infinity, along a ridge so flat that the search stopped anywhere on it, moved by the last bits
    # of the spend sums (q 6,622 to 162,755 in three builds of the same data; docs/scale.md). There the
    # limit, one nu for all, is the model: chosen unless the spread between customers is significant.
    limit = _fit_without_spread(x, m)
    if 2.0 * (fitted.log_likelihood - limit.log_likelihood) < _CHI2_1DF_95:
        return limit
    return fitted


_CHI2_1DF_95 = 3.841458820694124  # the likelihood-ratio test for one parameter (q), at 5%
_Q_NO_SPREAD = float(np.exp(_LOG_Q_BOUND))  # the fit's bound on q: a spread of nu across customers of 0.25%


def _fit_without_spread(x: np.ndarray, m: np.ndarray) -> GammaGamma:
    """Gamma-Gamma's limit q -> infinity: every purchase Gamma(p, nu) with one nu for all customers, so the
    mean of x purchases is Gamma(p x, x nu). nu = sum(p x) / sum(x m) for a given p; p by a 1-d search.
    Returned as q at the fit's bound and gamma = (q - 1) / nu: the same population mean p / nu, and the
    customer's own mean weighted p x / (p x + q - 1), that is next to nothing."""
    from scipy.optimize import minimize_scalar
    from scipy.special import gammaln

    def log_likelihood(p: float) -> float:
        px = p * x
        nu = px.sum() / (x * m).sum()
        return float((px * np.log(x * nu) - gammaln(px) + (px - 1.0) * np.log(m) - x * nu * m).sum())

    res = minimize_scalar(lambda log_p: -log_likelihood(float(np.exp(log_p))), bounds=(-12.0, 12.0),
                          method="bounded", options={"xatol": 1e-10})
    p = float(np.exp(res.x))
    nu = float((p * x).sum() / (x * m).sum())
    return GammaGamma(p, _Q_NO_SPREAD, (_Q_NO_SPREAD - 1.0) / nu, log_likelihood=log_likelihood(p),
                      customers=int(len(x)), converged=bool(res.success))


def simulate_values(x, p: float, q: float, gamma: float, seed: int = 0) -> np.ndarray:
    """Mean purchase values drawn from the Gamma-Gamma process, for tests: nu ~ Gamma(q, rate gamma) per
    customer, then ``x`` purchases of Gamma(p, rate nu) each (their mean is Gamma(p x, rate x nu))."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    nu = rng.gamma(q, 1.0 / gamma, len(x))
    return rng.gamma(p * x, 1.0 / (x * nu))
