"""The two-sample tests of data drift, each giving a statistic, a p-value and an effect size.

Welch's t and the category chi-square are scipy.stats' own, called once per check (Welch
vectorised over the features from their summaries). KS, the rate tests, Fisher's z and the
domain AUC take their p-values from scipy.special's distribution functions, with the statistic
from numpy: ``scipy.stats.ks_2samp`` costs about 2 ms a call here (its generic axis and NaN
machinery), more than a whole check's budget, against tens of microseconds.
tests/test_data_monitor.py checks each one against scipy.stats on random samples.

The p-value says whether a difference is real, the effect whether it matters: a check alarms
only on both (see `driftstream.stream.alarm_gate`).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> d, p = ks(np.sort(rng.normal(size=500)), rng.normal(0.5, 1, size=500))
>>> round(d, 1), p < 1e-6
(0.2, True)
>>> t, p, effect = welch(np.array([0.0]), np.array([1.0]), np.array([500]),
...                      np.array([0.5]), np.array([1.0]), np.array([500]))
>>> round(float(effect[0]), 2), bool(p[0] < 1e-6)
(0.5, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

__all__ = ["Finding", "categorical", "correlation", "domain_auc", "ks", "proportions", "welch"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One test of one feature in one check: ``effect`` is compared with the test's floor."""

    test: str
    feature: str | None
    statistic: float
    p_value: float
    effect: float


def ks(reference_sorted: np.ndarray, live: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov: D (the largest gap between the two empirical CDFs, as
    ``scipy.stats.ks_2samp``) and Kolmogorov's limiting p-value, ``scipy.special.kolmogorov``
    (slightly above ks_2samp's ``method="asymp"``, so on the safe side)."""
    live = np.sort(live)
    n1, n2 = len(reference_sorted), len(live)
    both = np.concatenate((reference_sorted, live))
    cdf1 = np.searchsorted(reference_sorted, both, side="right") / n1
    cdf2 = np.searchsorted(live, both, side="right") / n2
    d = float(np.max(np.abs(cdf1 - cdf2)))
    p = float(special.kolmogorov(math.sqrt(n1 * n2 / (n1 + n2)) * d))
    return d, min(max(p, 0.0), 1.0)


def welch(
    mean1: np.ndarray,
    var1: np.ndarray,
    n1: np.ndarray,
    mean2: np.ndarray,
    var2: np.ndarray,
    n2: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch's t-test on many features at once (``scipy.stats.ttest_ind_from_stats``, one
    vectorised call) from each side's mean, sample variance (ddof=1) and count; the effect is
    Cohen's d, the mean difference over the two sides' average standard deviation. Constant
    features give t=0, p=1 when unchanged (a constant that moved shows in KS, D=1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t, p = stats.ttest_ind_from_stats(
            mean2, np.sqrt(var2), n2, mean1, np.sqrt(var1), n1, equal_var=False
        )
        sd = np.sqrt((var1 + var2) / 2)
        effect = np.where(sd > 0, (mean2 - mean1) / sd, 0.0)
    unchanged = np.isnan(t)  # both sides constant
    t, p = np.where(unchanged, 0.0, t), np.where(unchanged, 1.0, p)
    return t, np.clip(p, 0.0, 1.0), effect


def proportions(
    k1: np.ndarray, n1: np.ndarray, k2: np.ndarray, n2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rates k/n compared (missing values, out-of-range values) on many features at once: the
    chi-square statistic of the 2x2 table without continuity correction (as
    ``scipy.stats.chi2_contingency(correction=False)``), its p-value, and the rate difference.
    Two rates of 0 (or of 1) give chi2=0, p=1."""
    pooled = (k1 + k2) / (n1 + n2)
    denom = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    diff = k2 / n2 - k1 / n1
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(denom > 0, diff**2 / denom, 0.0)
    return chi2, special.chdtrc(1, chi2), diff


def categorical(reference: np.ndarray, live: np.ndarray) -> tuple[float, float, float, list]:
    """Category frequencies (of ``str(value)``) compared: chi-square of the 2 x K table
    (``scipy.stats.chi2_contingency(correction=False)``), its p-value, Cramer's V (``sqrt(chi2
    / n)`` for two rows) and the categories seen live but never in the reference."""
    cats1, counts1 = np.unique(np.asarray(reference).astype(str), return_counts=True)
    cats2, counts2 = np.unique(np.asarray(live).astype(str), return_counts=True)
    cats = np.union1d(cats1, cats2)
    table = np.zeros((2, len(cats)))
    table[0, np.searchsorted(cats, cats1)] = counts1
    table[1, np.searchsorted(cats, cats2)] = counts2
    new = np.setdiff1d(cats2, cats1).tolist()
    n = table.sum()
    if len(cats) < 2 or n == 0:
        return 0.0, 1.0, 0.0, new
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    return float(chi2), float(p), math.sqrt(chi2 / n), new


def correlation(r1: float, n1: int, r2: float, n2: int) -> tuple[float, float, float]:
    """Two Pearson correlations compared with Fisher's z test: z, its two-sided p-value and the
    change in r."""
    clip = 1 - 1e-12
    z1, z2 = math.atanh(max(-clip, min(clip, r1))), math.atanh(max(-clip, min(clip, r2)))
    z = (z2 - z1) / math.sqrt(1 / (n1 - 3) + 1 / (n2 - 3))
    return z, float(2 * special.ndtr(-abs(z))), r2 - r1


def domain_auc(auc: float, n_pos: int, n_neg: int) -> tuple[float, float]:
    """A domain classifier's ROC AUC against 0.5 (cannot tell reference from live): the
    Mann-Whitney normal approximation, z and its one-sided p-value (only an AUC above 0.5
    says the classifier tells them apart), for ``n_pos`` live and ``n_neg`` reference rows
    scored."""
    sd = math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))
    z = (auc - 0.5) / sd
    return z, float(special.ndtr(-z))
