"""features.btyd: BG/NBD and Gamma-Gamma against parameters they must recover, values pymc-marketing
computes, and numerical integration."""

from __future__ import annotations

import numpy as np
import pytest

from features import btyd


# ---- Gamma-Gamma ------------------------------------------------------------------------------------
def test_gamma_gamma_recovers_the_parameters_it_was_simulated_with():
    truth = {"p": 6.25, "q": 3.74, "gamma": 15.44}  # the size of Fader and Hardie's CDNOW fit
    x = np.random.default_rng(0).integers(1, 12, 20000).astype(float)
    m = btyd.simulate_values(x, **truth, seed=2)
    fitted = btyd.fit_gamma_gamma(x, m)
    assert fitted.converged and fitted.customers == 20000
    # p and gamma trade off against each other (a long ridge); q and the mean value are tight.
    for name in ("p", "gamma"):
        assert getattr(fitted, name) == pytest.approx(truth[name], rel=0.2), name
    assert fitted.q == pytest.approx(truth["q"], rel=0.05)
    mean = truth["p"] * truth["gamma"] / (truth["q"] - 1)
    assert fitted.mean_value == pytest.approx(mean, rel=0.03)
    assert btyd.gamma_gamma_log_likelihood(tuple(truth.values()), x, m).sum() < fitted.log_likelihood
    # Customers without a usable purchase are left out of the fit, and too few is a clear error.
    more = btyd.fit_gamma_gamma(np.r_[x, 0, 0, 3], np.r_[m, 0, 5.0, -2.0])
    assert more.customers == 20000
    with pytest.raises(Exception, match="at least 10 customers"):
        btyd.fit_gamma_gamma([0, 1, 2], [0, 5.0, 7.0])


def test_values_without_a_spending_level_per_customer_fit_the_limit_the_same_way_every_time():
    # One nu for everyone (every customer's purchases drawn around one price): q -> infinity, a flat ridge.
    rng = np.random.default_rng(3)
    x = rng.integers(1, 12, 20000).astype(float)
    m = rng.gamma(3.0 * x, 1.0 / (x * 0.05))  # p = 3, nu = 0.05: a mean value per purchase of 60
    fitted = btyd.fit_gamma_gamma(x, m)
    assert fitted.q == pytest.approx(np.exp(12.0))  # the limit, at the fit's bound
    assert fitted.p == pytest.approx(3.0, rel=0.03) and fitted.mean_value == pytest.approx(60.0, rel=0.01)
    # The last bits of the sums behind the means (another thread count, another engine) change nothing
    # that matters: before the limit, q landed anywhere between thousands and the bound.
    nudged = btyd.fit_gamma_gamma(x, m * (1.0 + 4e-16 * rng.choice([-1.0, 1.0], len(m))))
    for name in ("p", "q", "gamma"):
        assert getattr(nudged, name) == pytest.approx(getattr(fitted, name), rel=1e-6), name
    # Each customer's expected value is then the population's, whatever their own mean.
    values = fitted.expected_value([1.0, 10.0], [10.0, 500.0])
    assert values == pytest.approx([fitted.mean_value] * 2, rel=0.01)
    # A real spread between customers is kept (the recovery test above), and the limit is no worse a fit
    # than the full model here: the likelihood-ratio test found no spread.
    assert fitted.log_likelihood >= btyd.gamma_gamma_log_likelihood((3.0, 1e4, 1e4 / 0.05), x, m).sum() - 2.0


def test_gamma_gamma_likelihood_and_expectation_equal_numerical_integration():
    """The closed forms against integrating nu out by quadrature: the mean of x Gamma(p, nu) values is
    Gamma(p x, rate x nu); nu ~ Gamma(q, rate gamma); E[value | data] = E[p / nu | data]."""
    from scipy import integrate, stats

    model = btyd.GammaGamma(p=2.5, q=4.0, gamma=30.0)
    for x, m in ((1, 20.0), (3, 45.0), (8, 12.5)):
        def joint(nu, x=x, m=m):
            return (stats.gamma.pdf(m, a=model.p * x, scale=1 / (x * nu))
                    * stats.gamma.pdf(nu, a=model.q, scale=1 / model.gamma))
        marginal, _ = integrate.quad(joint, 0, np.inf, limit=200)
        ll = btyd.gamma_gamma_log_likelihood((model.p, model.q, model.gamma), [x], [m])[0]
        assert ll == pytest.approx(np.log(marginal), rel=1e-7)
        posterior_mean, _ = integrate.quad(lambda nu, j=joint: model.p / nu * j(nu), 0, np.inf, limit=200)
        assert model.expected_value([x], [m])[0] == pytest.approx(posterior_mean / marginal, rel=1e-7)
    # No purchase (or a non-positive mean): the population mean p gamma / (q - 1).
    np.testing.assert_allclose(model.expected_value([0, 2], [0.0, -5.0]), [2.5 * 30 / 3] * 2)
    # Many purchases: the customer's own mean dominates.
    assert model.expected_value([500], [80.0])[0] == pytest.approx(80.0, rel=0.01)


# ---- BG/NBD -----------------------------------------------------------------------------------------
def test_bgnbd_recovers_the_parameters_it_was_simulated_with():
    truth = {"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.5}
    rng = np.random.default_rng(42)
    x, t_x, T = btyd.simulate(20000, **truth, T=rng.uniform(30, 365, 20000), seed=1)
    fitted = btyd.fit(x, t_x, T)
    assert fitted.converged and fitted.customers == 20000
    for name, value in truth.items():
        assert getattr(fitted, name) == pytest.approx(value, rel=0.12), name
    # The maximum: the true parameters have a lower likelihood than the fitted ones.
    assert btyd.log_likelihood(tuple(truth.values()), x, t_x, T).sum() < fitted.log_likelihood


def test_bgnbd_formulas_equal_pymc_marketing():
    """Values of pymc-marketing 0.18.2's BetaGeoModel (expected_probability_alive, expected_purchases with
    future_t=60) at its MAP parameters on a simulated sample, computed once in a scratch environment."""
    model = btyd.BGNBD(r=0.25909968837955916, alpha=4.314391768144546, a=0.8155432245053471, b=2.513106094209326)
    x, t_x, T = [0, 1, 3, 10, 2], [0, 10, 50, 300, 200], [100, 100, 100, 365, 365]
    np.testing.assert_allclose(
        model.p_alive(x, t_x, T),
        [1.0, 0.201759615324339, 0.39745814680486935, 0.6595656421225097, 0.5307214360001836], rtol=1e-9)
    np.testing.assert_allclose(
        model.expected_purchases(60, x, t_x, T),
        [0.13774814805874366, 0.13124556811848107, 0.6501412071057653, 1.0425087800932178, 0.1873762752186743],
        rtol=1e-9)
    # More time, more expected purchases; none over no time.
    longer = model.expected_purchases(120, x, t_x, T)
    assert (longer > model.expected_purchases(60, x, t_x, T)).all()
    np.testing.assert_allclose(model.expected_purchases(0, x, t_x, T), 0, atol=1e-12)
