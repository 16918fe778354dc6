"""The comparison's statistics, checked by simulation (ganlab.report.stats): many A-versus-A comparisons (identical
arms, different seeds) call a winner at most at the stated rate, and a known shift is found at the stated power.
Vectorised: 20,000 comparisons per check, in one scipy call each."""

import numpy as np
import pytest
from scipy import optimize

from ganlab.report import stats

M = 20_000  # comparisons per simulation; the Monte-Carlo standard error of a 5 % rate is 0.15 %
TOL = 4 * np.sqrt(0.05 * 0.95 / M)  # four standard errors of a rate near 5 %


def draw(rng, dist, shape):
    if dist == "normal":
        return rng.normal(180.0, 20.0, shape)  # FID-like: mnist_vanilla's seeds spread ~20 points
    return rng.lognormal(5.0, 0.3, shape)  # skewed, as a metric bounded below can be


@pytest.mark.parametrize("n", [2, 3, 5, 10])
@pytest.mark.parametrize("dist", ["normal", "lognormal"])
def test_identical_arms_call_a_winner_at_most_at_the_stated_rate(n, dist):
    rng = np.random.default_rng(n)
    a, b = draw(rng, dist, (M, n)), draw(rng, dist, (M, n))
    v = stats.verdicts(a, b, lower_is_better=True)
    for side in ("a", "b"):  # each direction at most ALPHA / 2
        assert np.mean(v == side) <= stats.ALPHA / 2 + TOL
    # and not far below it either (a test that never calls anything would pass the line above)
    assert np.mean(v != "none") >= stats.ALPHA / 2 - TOL


def test_a_known_shift_is_found_at_the_stated_power():
    n = 5
    # the standardised shift that the noncentral t says 5 seeds per arm detect with 80 % power
    d = optimize.brentq(lambda e: stats.power(e, n) - stats.POWER, 0.1, 10)
    assert stats.seeds_needed(d) == n and stats.seeds_needed(d * 0.9) > n
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 1.0, (M, n))
    b = rng.normal(d, 1.0, (M, n))  # B is worse when lower is better
    v = stats.verdicts(a, b, lower_is_better=True)
    # Welch spends a little power on not assuming equal variances: within 5 points below the pooled t's 80 %
    assert stats.POWER - 0.05 <= np.mean(v == "a") <= stats.POWER + 4 * np.sqrt(0.16 / M)
    assert np.mean(v == "b") < 1e-3
    # higher-is-better flips the call
    assert np.mean(stats.verdicts(a, b, lower_is_better=False) == "b") == np.mean(v == "a")


def test_the_interval_of_the_difference_covers_the_true_shift_at_its_level():
    rng = np.random.default_rng(2)
    a, b = rng.normal(3.0, 2.0, (M, 4)), rng.normal(1.0, 1.0, (M, 6))
    _, lo, hi, _ = stats.welch(a, b)
    cover = np.mean((lo <= 2.0) & (2.0 <= hi))
    assert abs(cover - stats.LEVEL) <= 4 * np.sqrt(0.05 * 0.95 / M) + 0.005


def test_probability_of_improvement_is_the_share_of_seed_pairs_won():
    a, b = np.array([1.0, 2.0, 5.0]), np.array([3.0, 4.0])  # a < b in 4 of 6 pairs
    assert stats.p_better(a, b, lower_is_better=True) == pytest.approx(4 / 6)
    assert stats.p_better(a, b, lower_is_better=False) == pytest.approx(2 / 6)
    assert stats.p_better(np.array([1.0]), np.array([1.0]), True) == pytest.approx(0.5)  # a tie counts half


def test_one_seed_per_arm_is_not_judged():
    row = stats.compare([4.31], [4.64], lower_is_better=True)
    assert row["verdict"] == "none" and row["judged"] is False
    assert row["a"]["lo"] is None and row["diff"]["lo"] is None
    assert row["diff"]["mean"] == pytest.approx(-0.33)


def test_a_clear_difference_is_judged_with_its_interval():
    row = stats.compare([10.0, 11.0, 12.0, 10.5, 11.5], [20.0, 21.0, 19.0, 20.5, 19.5], lower_is_better=True)
    assert row["verdict"] == "a" and row["judged"]
    assert row["diff"]["mean"] == pytest.approx(-9.0)
    assert row["diff"]["lo"] < -9.0 < row["diff"]["hi"] < 0
    assert row["p_better"] == 1.0 and row["seeds_needed"] in (2, 3)  # a huge effect: t needs df >= 2
