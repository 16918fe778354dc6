"""The statistics of a comparison between two arms (per-seed values of one metric): scipy.stats, not hand-written.

- each arm: its mean and Student's t interval (95 %);
- the difference of the means (a - b) with Welch's t interval (unequal variances);
- the probability that a seed of A beats a seed of B: the Mann-Whitney U statistic / (n_a n_b), ties half (the
  "probability of improvement" rliable reports, Agarwal et al. 2021);
- the verdict: Welch's two-sided t-test at `ALPHA` -- the better arm when p < ALPHA, else "none";
- how many seeds per arm would detect a difference of the observed size with 80 % power (noncentral t).

Every function takes arrays whose last axis is the seeds, so the simulation tests judge thousands of comparisons
in one call (tests/test_compare_stats.py checks the false "better" rate and the power)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import stats

ALPHA = 0.05  # two-sided: each direction's false "better" rate is at most ALPHA / 2
LEVEL = 0.95  # the intervals
POWER = 0.8
MAX_SEEDS = 1000  # "seeds needed" beyond this is reported as more than MAX_SEEDS
LOWER_IS_BETTER = {"fid": True, "kid": True, "err": True, "unrec": True, "cover": False, "acc": False}

METHOD = (f"Each arm is the per-seed values of its experiments; means carry Student's t {LEVEL:.0%} interval, the "
          f"difference Welch's t interval, and an arm is called better only when Welch's two-sided t-test gives "
          f"p < {ALPHA} (at most {ALPHA / 2:.1%} false calls each way when the arms are alike, checked by "
          f"simulation); P(better) is the Mann-Whitney U share of seed pairs one arm wins, and 'seeds to detect' "
          f"the seeds per arm a t-test needs to find a difference of the observed size with {POWER:.0%} power.")


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: Optional[float]  # None with one seed: no interval
    hi: Optional[float]
    n: int

    def as_json(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}


def mean_interval(values: np.ndarray) -> Interval:
    """Mean and Student's t interval of one arm's seeds (no interval from a single seed)."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return Interval(m, None, None, len(v))
    lo, hi = stats.t.interval(LEVEL, len(v) - 1, loc=m, scale=stats.sem(v)) if v.std() > 0 else (m, m)
    return Interval(m, float(lo), float(hi), len(v))


def welch(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(diff of means a - b, interval lo, interval hi, two-sided p) along the last axis."""
    res = stats.ttest_ind(a, b, axis=-1, equal_var=False)
    ci = res.confidence_interval(LEVEL)
    return np.mean(a, -1) - np.mean(b, -1), ci.low, ci.high, res.pvalue


def p_better(a: np.ndarray, b: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """P(a seed of A beats a seed of B): U / (n_a n_b), ties counting half."""
    u = stats.mannwhitneyu(a, b, axis=-1, alternative="two-sided").statistic  # pairs with a > b (+ half ties)
    share = u / (np.shape(a)[-1] * np.shape(b)[-1])
    return 1 - share if lower_is_better else share


def verdicts(a: np.ndarray, b: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """'a', 'b' or 'none' for each comparison along the last axis (Welch at ALPHA, two-sided)."""
    diff, _, _, p = welch(a, b)
    a_wins = diff < 0 if lower_is_better else diff > 0
    return np.where(p < ALPHA, np.where(a_wins, "a", "b"), "none")


def power(effect: float, n: int) -> float:
    """Power of the two-sided two-sample t-test at ALPHA, n seeds per arm, standardised effect |d|."""
    df = 2 * n - 2
    crit = stats.t.ppf(1 - ALPHA / 2, df)
    nc = abs(effect) * np.sqrt(n / 2)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))


def seeds_needed(effect: float) -> Optional[int]:
    """The fewest seeds per arm that detect a standardised effect |d| with POWER; None beyond MAX_SEEDS."""
    if not np.isfinite(effect) or effect == 0:
        return None
    def reached(n: int) -> bool:  # scipy's noncentral t gives NaN far out in its tail, where the power is ~1
        p = power(effect, n)
        return bool(np.isnan(p) or p >= POWER)

    ns = range(2, MAX_SEEDS + 1)  # the power grows with n: the first n that reaches POWER, by bisection
    i = bisect.bisect_left(ns, True, key=reached)
    return ns[i] if i < len(ns) else None


def effect_size(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's d: the difference of the means over the pooled standard deviation (inf when both arms are flat)."""
    na, nb = len(a), len(b)
    pooled = np.sqrt(((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2))
    diff = float(np.mean(a) - np.mean(b))
    return diff / pooled if pooled > 0 else (np.inf if diff else 0.0)


def compare(a: np.ndarray, b: np.ndarray, lower_is_better: bool) -> dict:
    """One row of the comparison. With fewer than two seeds in an arm there is no test: verdict 'none' and
    `judged` False (the page says it cannot judge)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    row = {"a": mean_interval(a).as_json(), "b": mean_interval(b).as_json(),
           "p_better": float(p_better(a, b, lower_is_better)), "verdict": "none", "judged": False,
           "seeds_needed": None}
    if len(a) < 2 or len(b) < 2:
        row["diff"] = {"mean": float(a.mean() - b.mean()), "lo": None, "hi": None}
        return row
    if np.var(a) == 0 and np.var(b) == 0:  # identical seeds (a deterministic metric): equal or not, no t-test
        diff = float(a.mean() - b.mean())
        row["diff"] = {"mean": diff, "lo": diff, "hi": diff}
        row.update(judged=True, verdict="none" if diff == 0 else ("a" if (diff < 0) == lower_is_better else "b"))
        return row
    diff, lo, hi, _ = welch(a, b)
    row["diff"] = {"mean": float(diff), "lo": float(lo), "hi": float(hi)}
    row.update(judged=True, verdict=str(verdicts(a, b, lower_is_better)), seeds_needed=seeds_needed(effect_size(a, b)))
    return row
