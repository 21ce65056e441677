"""Statistics behind every claim of the report: bootstrap intervals, exact McNemar, win/tie/loss."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from itertools import combinations

import numpy as np
from scipy import stats


def bootstrap_ci(values: Sequence[float], n_resamples: int = 2000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean (seeded, so reports are reproducible).

    Percentile rather than BCa: BCa is undefined for constant samples (all correct, none correct),
    which small slices produce all the time.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None, None
    if x.size == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((x,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                              method="percentile", random_state=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def ratio_ci(numerators: Sequence[float], denominators: Sequence[float], n_resamples: int = 2000,
             seed: int = 0, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Bootstrap interval of sum(num) / sum(den), resampling rows (e.g. unsupported / all claims per answer)."""
    u, t = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if t.sum() == 0:
        return None, None
    if u.size < 2 or np.all(u * t.sum() == t * u.sum()):
        r = float(u.sum() / t.sum())
        return r, r

    def stat(a, b, axis=-1):
        den = b.sum(axis=axis)
        return np.where(den > 0, a.sum(axis=axis) / np.where(den > 0, den, 1), 0.0)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((u, t), stat, paired=True, n_resamples=n_resamples, confidence_level=confidence,
                              method="percentile", random_state=np.random.default_rng(seed), vectorized=True)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def rate(flags: Sequence[bool | float], n_resamples: int = 2000, seed: int = 0) -> dict:
    """{"rate", "lo", "hi", "n"} for a list of 0/1 outcomes."""
    x = [float(f) for f in flags]
    lo, hi = bootstrap_ci(x, n_resamples, seed)
    return {"rate": float(np.mean(x)) if x else None, "lo": lo, "hi": hi, "n": len(x)}


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Exact McNemar test on paired 0/1 outcomes: a two-sided binomial test on the discordant pairs.

    `a_only`: pairs where only a is 1; `b_only`: only b. p = 1 without discordant pairs.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    n = a_only + b_only
    p = 1.0 if n == 0 else float(stats.binomtest(a_only, n, 0.5, alternative="two-sided").pvalue)
    return {"a_only": a_only, "b_only": b_only, "discordant": n, "p": min(p, 1.0), "n": len(a)}


def win_tie_loss(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Per question, from a's side: win (a correct, b not), loss (the reverse), tie (both or neither)."""
    m = mcnemar(a, b)
    return {"win": m["a_only"], "loss": m["b_only"], "tie": m["n"] - m["discordant"]}


def paired(table: dict[str, dict[str, bool]]) -> list[dict]:
    """McNemar and win/tie/loss for every pair of variants, over the questions both answered.

    `table` maps variant -> question key -> correct?
    """
    rows = []
    for va, vb in combinations(table, 2):
        keys = sorted(set(table[va]) & set(table[vb]))
        a = [table[va][k] for k in keys]
        b = [table[vb][k] for k in keys]
        m = mcnemar(a, b)
        rows.append({"a": va, "b": vb, "n": len(keys), "p": m["p"], "win": m["a_only"], "loss": m["b_only"],
                     "tie": len(keys) - m["discordant"],
                     "acc_a": float(np.mean(a)) if a else None, "acc_b": float(np.mean(b)) if b else None})
    return rows


def quantile(values: Sequence[float], q: float) -> float | None:
    return float(np.quantile(np.asarray(values, dtype=float), q)) if len(values) else None


def paired_difference(a: Sequence[bool], b: Sequence[bool], n_resamples: int = 2000, seed: int = 0,
                      confidence: float = 0.95) -> dict:
    """Accuracy of a minus accuracy of b over the same questions, with a paired bootstrap interval.

    Questions are resampled together (both variants' outcomes move as one), so the interval reflects
    how often the two disagree, not their separate spreads. `sd` is the per-question standard
    deviation of the difference, what `questions_to_decide` needs.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        return {"diff": None, "lo": None, "hi": None, "sd": None, "n": 0}
    lo, hi = bootstrap_ci(d, n_resamples, seed, confidence)
    return {"diff": float(d.mean()), "lo": lo, "hi": hi, "sd": float(d.std()), "n": int(d.size)}


def questions_to_decide(diff: float, sd: float, margin: float, alpha: float = 0.05,
                        power: float = 0.8) -> int | None:
    """Paired questions needed for the interval of the difference to decide, if the observed
    difference and discordance hold (normal approximation).

    Deciding means either separating (the interval excludes 0: half-width below |diff|) or equating
    (the interval inside +-margin: half-width below margin - |diff|), whichever needs fewer questions;
    `power` is the chance of getting there at that size. None when no size would decide (no
    disagreement to measure, or a difference of exactly zero with a zero margin).
    """
    half = max(abs(diff), margin - abs(diff))
    if sd <= 0 or half <= 0:
        return None
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return int(np.ceil((z * sd / half) ** 2))
