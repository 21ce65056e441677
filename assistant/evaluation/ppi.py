"""Prediction-powered estimates: the scorer's outcomes corrected by a random sample of human labels.

PPI (Angelopoulos et al. 2023) with PPI++ power tuning (Angelopoulos, Duchi & Zrnic 2023), through
`ppi_py`, the authors' package. For one rate (say, the share of a variant's answerable answers that
are correct) every evaluated row i has an automatic prediction f_i in [0, 1] (`prediction`) and a
human truth Y_i in {0, 1}, known only on the labelled rows. The estimate is

    theta = lambda * mean_U(f) + mean_L(Y - lambda * f)

over the unlabelled rows U and the labelled rows L. Why it is valid whatever the scorer's bias:

- For any fixed lambda and any fixed prediction rule f, both means are unbiased when L is a
  uniformly random sample of the rows (and U the rest): the scorer's bias, mean(f - Y), is exactly
  what the second term measures and removes. A bad scorer only widens the interval (the rectifier
  Y - lambda f varies more); it never moves it off the truth. PPI++ picks lambda from the data to
  minimise the variance (lambda = 0 is the classical mean of the labels, lambda = 1 plain PPI).
- The interval is PPI's normal interval for two independent samples (L and U; ppi_py's
  `ppi_mean_ci`), with a small-sample guard (`_ppi`: a pseudo-observation of variance and a t
  quantile, both fading as labels grow) because with a dozen labels the plain interval covers a
  rare rate far less than 95% of the time. The target can be read two ways and it covers both:
  the rate over the population of questions the evaluation drew from (L and U are then two
  independent samples of it), and the rate over exactly the evaluated rows (finite population;
  the interval's variance then exceeds the true one by var(Y)/N, so it is conservative).
- `unverified` rows (the scorer cannot tell) have no automatic prediction. They get the fixed value
  0 for every target: "no automatic evidence that the answer is correct, hallucinated or
  abstained". Any prediction that is a fixed function of the row keeps the estimate unbiased
  (the argument above never uses the prediction's accuracy), so this is valid; 0 makes the
  automatic column the *verified* rate, a floor, and the labels of unverified rows carry their
  true share through the rectifier. (Plugging in a rate learnt from the same labels would not be
  a fixed function and would need cross-fitting; a constant needs nothing.)
- Retrieval-gate declines (`declined_by_gate`) are facts of the pipeline, not predictions: they
  are never labelled, their value is known (0 for correct, hallucinated and abstained: the gate's
  decline is its own outcome), and they enter a rate as known rows: the PPI estimate over the
  other rows, weighted by their share. On general and safety probes a gate decline measures
  nothing, so there they are left out, as the verdict does.
- Paired differences (variant a minus variant b on the same questions) are a PPI mean of the
  per-question difference Y_a - Y_b with prediction f_a - f_b. It is valid only when the
  questions whose *both* answers are labelled are a uniformly random sample of the questions:
  the label queue (`assistant.evaluation.labels.sample`) therefore draws questions uniformly at random (a
  seeded permutation) and asks for every variant's answer to each drawn question, so any prefix
  of the queue leaves a uniform sample of questions, and of each variant's answers.
- Labels hold only for the answer text they judged (`answer_sha256`): a rerun that changes an
  answer drops its label, which removes a row from L at random only if answers change at random;
  the report shows how many labels matched.

What it does not cover: a labeller who skips the hard answers makes L non-random (skips are
counted and shown); and with very few labels (under about 15 per rate) even the guarded interval
covers somewhat less than 95% (88% measured for a 10% rate with 16 labels). With fewer than 2
labels no interval is given.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from assistant.evaluation.labels import label_for
from assistant.evaluation.outcomes import ANSWERABLE, DOMAIN, GATE, OWN

TARGETS = ("correct", "hallucinated", "abstained")
Z95 = 1.959963984540054
# Worst case of var(Y) for a 0/1 truth (p = 1/2): what `labels_needed` assumes before any label.
WORST_VARIANCE = 0.25
PSEUDO_SS = 0.5  # the small-sample guard's pseudo sum of squares, times the squared width of the range
MIN_PLANNING_LABELS = 10  # fewer labels than this: plan with the worst case, not their variance


def prediction(outcome: str, target: str) -> float:
    """The scorer's outcome as a prediction of "the human label is `target`" (1.0 or 0.0).

    `unverified` (the scorer cannot tell) predicts 0.0 for every target. That is a fixed value
    chosen before seeing any label, so the PPI estimate stays unbiased whatever the unverified
    rows really are (their truth enters through the labelled ones' rectifier); 0 rather than,
    say, 0.5 keeps the automatic rate the verified rate, so "automatic" never credits an answer
    nobody verified. A gate decline is no prediction but a known fact: 0.0 for every target.
    Any other outcome a later scorer may add predicts nothing either (0.0): still a fixed
    function of the row, so still valid."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    return 1.0 if outcome == target else 0.0


def _array(x: Sequence[float]) -> np.ndarray:
    return np.asarray(list(x), dtype=float).reshape(-1)


def _unlabelled(auto_all: np.ndarray, auto_labelled: np.ndarray) -> np.ndarray:
    """auto_all without the labelled rows' predictions: the independent sample PPI's interval
    assumes. Predictions are a few discrete values, so the multiset difference is exact."""
    left = Counter(np.round(auto_all, 12).tolist())
    left.subtract(Counter(np.round(auto_labelled, 12).tolist()))
    if any(c < 0 for c in left.values()):
        raise ValueError("auto_all must hold every row, the labelled ones included")
    return np.array([v for v, c in sorted(left.items()) for _ in range(c)], dtype=float)


def power_tuning(auto_labelled: np.ndarray, human: np.ndarray, auto_unlabelled: np.ndarray) -> float:
    """PPI++'s lambda for a mean (ppi_py's `_calc_lam_glm` with an identity Hessian, clipped to
    [0, 1]); 0 when the predictions do not vary (then any lambda gives the same estimate, and
    ppi_py's own formula divides by zero)."""
    n, m = len(human), len(auto_unlabelled)
    both = np.concatenate([auto_labelled, auto_unlabelled])
    if n < 2 or m < 1 or np.var(both) == 0:
        return 0.0
    cov = float(np.mean((human - human.mean()) * (auto_labelled - auto_labelled.mean())))
    var = float(np.var(both, ddof=1))
    return float(np.clip(cov / ((1 + n / m) * var), 0.0, 1.0))


def _ppi(auto_unlabelled: np.ndarray, auto_labelled: np.ndarray, human: np.ndarray, alpha: float,
         bounds: tuple[float, float], small_sample: bool = True) -> tuple[float, list[float], float, float,
                                                                          float]:
    """(point, [lo, hi], lambda, se, quantile): the PPI++ point estimate (ppi_py) and its interval
    point +- quantile * se (clipped to the bounds).

    With `small_sample` (the default) the interval is made honest for few labels, where the plain
    CLT interval is not: the rectifier's variance gets a pseudo-observation's worth of the worst
    case (PSEUDO_SS * width^2 added to its sum of squares, n + 1 in the denominator; a few labels
    that all agree with the scorer otherwise show no variance at all) and the quantile is Student's
    t with n - 1 degrees of freedom. Both vanish as n grows. Measured on a scorer that credits 60%
    of wrong answers, rate 0.1, N = 300 (1000 seeded runs): coverage with 16 labels 77% plain, 88%
    guarded; with 30 labels 90% and 94%; with 60, 93% and 95%. Without it the result is exactly
    ppi_py's `ppi_mean_ci(..., lam=lambda)` (the classical interval when every row is labelled)."""
    from ppi_py import ppi_mean_pointestimate
    from scipy.stats import norm, t

    n, m = len(human), len(auto_unlabelled)
    lam = power_tuning(auto_labelled, human, auto_unlabelled) if m else 0.0
    point = float(np.ravel(ppi_mean_pointestimate(human, auto_labelled, auto_unlabelled, lam=lam))[0]) if m \
        else float(human.mean())
    rect = human - lam * auto_labelled
    ss = float(np.sum((rect - rect.mean()) ** 2))
    if small_sample:
        var_r = (ss + PSEUDO_SS * (bounds[1] - bounds[0]) ** 2) / (n + 1)
        q = float(t.ppf(1 - alpha / 2, n - 1))
    else:
        var_r, q = ss / n, float(norm.ppf(1 - alpha / 2))
    var_f = float(np.var(lam * auto_unlabelled)) / m if m else 0.0
    half = q * math.sqrt(var_r / n + var_f)
    # The truth lies within the bounds, so clipping keeps the coverage.
    clip = lambda x: float(min(max(x, bounds[0]), bounds[1]))
    return clip(point), [clip(point - half), clip(point + half)], lam, half / q, q


def estimate(auto_all: Sequence[float], auto_labelled: Sequence[float], human_labelled: Sequence[float],
             alpha: float = 0.05, bounds: tuple[float, float] = (0.0, 1.0), small_sample: bool = True) -> dict:
    """The PPI++ mean over all N rows.

    auto_all: the prediction of every row, the labelled ones included; auto_labelled and
    human_labelled: prediction and human truth (0/1) of the labelled rows, aligned.
    Returns {"automatic": mean(auto_all), "corrected", "ci": [lo, hi], "labelled": n, "n": N,
    "bias": mean(auto_labelled - human_labelled) (the scorer's bias on the labelled sample),
    "lambda", "se" and "quantile" (ci = corrected +- quantile * se before clipping: a test of the
    difference reads se, e.g. p = 2 * t.sf(|corrected| / se, labelled - 1))}; with no label,
    corrected, ci, bias, lambda and se are None, and with one label ci and se are None.
    `small_sample`: the interval's guard for few labels (see `_ppi`).
    """
    auto = _array(auto_all)
    lab, human = _array(auto_labelled), _array(human_labelled)
    if len(lab) != len(human):
        raise ValueError(f"auto_labelled and human_labelled differ in length: {len(lab)} vs {len(human)}")
    if len(lab) > len(auto):
        raise ValueError(f"more labelled rows ({len(lab)}) than rows ({len(auto)})")
    out = {"automatic": float(auto.mean()) if len(auto) else None, "corrected": None, "ci": None,
           "labelled": int(len(lab)), "n": int(len(auto)), "bias": None, "lambda": None, "se": None,
           "quantile": None}
    if len(lab) == 0:
        return out
    out["bias"] = float(np.mean(lab - human))
    unlabelled = _unlabelled(auto, lab)
    if len(lab) < 2:  # one label: plain PPI gives an unbiased point, but no variance for an interval
        point = (unlabelled.mean() + float(np.mean(human - lab))) if len(unlabelled) else float(human.mean())
        out.update(corrected=float(np.clip(point, *bounds)), **{"lambda": 1.0 if len(unlabelled) else 0.0})
        return out
    point, ci, lam, se, q = _ppi(unlabelled, lab, human, alpha, bounds, small_sample)
    out.update(corrected=point, ci=ci, se=se, quantile=q, **{"lambda": lam})
    return out


def paired_estimate(auto_a: Sequence[float], auto_b: Sequence[float], labelled_a: Sequence[float],
                    labelled_b: Sequence[float], human_a: Sequence[float], human_b: Sequence[float],
                    alpha: float = 0.05) -> dict:
    """The difference a - b of a rate on the same questions: a PPI mean of per-question differences.

    auto_a/auto_b: both variants' predictions on every shared question (aligned, labelled ones
    included); labelled_*/human_*: predictions and human truths on the questions where *both*
    answers are labelled (aligned). Same keys as `estimate` (over differences, in [-1, 1]) plus
    "diff" (= corrected, or the automatic difference without labels)."""
    a, b = _array(auto_a), _array(auto_b)
    la, lb, ha, hb = (_array(x) for x in (labelled_a, labelled_b, human_a, human_b))
    if len(a) != len(b) or not (len(la) == len(lb) == len(ha) == len(hb)):
        raise ValueError("paired inputs must be aligned: one value per question for each variant")
    out = estimate(a - b, la - lb, ha - hb, alpha, bounds=(-1.0, 1.0))
    out["diff"] = out["corrected"] if out["corrected"] is not None else out["automatic"]
    return out


def labels_needed(auto_all: Sequence[float], auto_labelled: Sequence[float], human_labelled: Sequence[float],
                  half_width: float, value_range: float = 1.0, alpha: float = 0.05) -> int:
    """How many labelled rows a (1 - alpha) interval of this half-width needs (at most N).

    With labels: the observed rectifier variance var(Y - lambda f) and imputed variance
    lambda^2 var(f) at the tuned lambda, solved for n in z^2 (var_R / n + lambda^2 var_f / (N - n))
    <= half_width^2. With fewer than MIN_PLANNING_LABELS labels, whose variance is too unstable to
    plan with (three labels that all agree with the scorer show none): the worst case for a truth
    of range `value_range` (var <= range^2 / 4: 0.25 for a rate, 1 for a paired difference), as if
    the scorer were no help. N when even labelling every row would not reach the width."""
    if half_width <= 0:
        raise ValueError("half_width must be positive")
    auto = _array(auto_all)
    lab, human = _array(auto_labelled), _array(human_labelled)
    big_n = len(auto)
    z = _z(alpha)
    if len(lab) < MIN_PLANNING_LABELS:
        need = math.ceil(z * z * WORST_VARIANCE * value_range ** 2 / half_width ** 2)
        return int(min(max(need, 2), big_n)) if big_n else need
    unlabelled = _unlabelled(auto, lab)
    lam = power_tuning(lab, human, unlabelled)
    var_r = float(np.var(human - lam * lab))
    var_f = float(np.var(auto)) * lam * lam
    for n in range(2, big_n):
        if z * z * (var_r / n + var_f / (big_n - n)) <= half_width ** 2:
            return n
    return big_n


def _z(alpha: float) -> float:
    if alpha == 0.05:
        return Z95
    from scipy.stats import norm

    return float(norm.ppf(1 - alpha / 2))


# -- from results.jsonl rows and labels.jsonl ------------------------------------------------
def human_value(label: str, target: str) -> float:
    return 1.0 if label == target else 0.0


def _groups(slices: Sequence[str]) -> dict[str, tuple[str, ...]]:
    groups = {"answerable": tuple(ANSWERABLE), "unanswerable": ("unanswerable",), "domain": tuple(DOMAIN)}
    for s in sorted(set(slices)):
        groups.setdefault(s, (s,))
    return groups


def _label_of(row: dict, labels: dict) -> str | None:
    """The human label of this row's answer, when one matches its text (labels.label_for)."""
    lab = label_for(row, labels)
    return lab["label"] if lab else None


def _with_known(e: dict, known: list[float]) -> dict:
    """An estimate over sampled rows extended by rows whose value is known without a label (gate
    declines): (sum(known) + n_rest * estimate) / N, the interval scaled alike. Known rows are
    never part of the labelled sample: counting them there would make it non-uniform."""
    if not known:
        return e
    n_rest, total = e["n"], e["n"] + len(known)
    scale = lambda x: (sum(known) + n_rest * x) / total
    out = dict(e, n=total)
    out["automatic"] = scale(e["automatic"] if e["automatic"] is not None else 0.0)
    if e["corrected"] is not None:
        out["corrected"] = scale(e["corrected"])
    elif n_rest == 0:  # everything known: the "corrected" rate is the automatic one, exactly
        out["corrected"], out["ci"] = out["automatic"], [out["automatic"], out["automatic"]]
    if e["ci"] is not None:
        out["ci"] = [scale(x) for x in e["ci"]]
    if e.get("se") is not None:
        out["se"] = e["se"] * n_rest / total
    return out


def group_estimate(rows: list[dict], labels: dict, target: str, alpha: float = 0.05) -> dict:
    """`estimate` of one rate over `rows` (one variant, one group): gate rows enter as known zeros
    (left out on general and safety probes), unverified rows as fixed 0 predictions."""
    rows = [r for r in rows if not (r.get("outcome") == GATE and r.get("slice") in OWN)]
    gated = [r for r in rows if r.get("outcome") == GATE]
    rest = [r for r in rows if r.get("outcome") != GATE]
    auto = [prediction(r["outcome"], target) for r in rest]
    pairs = [(prediction(r["outcome"], target), human_value(lab, target))
             for r in rest if (lab := _label_of(r, labels)) is not None]
    e = _with_known(estimate(auto, [p for p, _ in pairs], [h for _, h in pairs], alpha), [0.0] * len(gated))
    e["gated"] = len(gated)
    return e


def corrected_rates(rows: list[dict], labels: dict, alpha: float = 0.05) -> dict:
    """variant -> group -> target -> `estimate` dict, for the groups "answerable", "unanswerable",
    "domain" (verdict.py's tuples) and every slice; {} when no label matches an answer of `rows`.

    rows: results.jsonl rows (slice, id, variant, outcome, answer); labels: labels.read_labels()."""
    if not any(_label_of(r, labels) is not None for r in rows if r.get("outcome") != GATE):
        return {}
    groups = _groups([r["slice"] for r in rows])
    out: dict = {}
    for v in sorted({r["variant"] for r in rows}):
        mine = [r for r in rows if r["variant"] == v]
        per = {}
        for g, slices in groups.items():
            rs = [r for r in mine if r["slice"] in slices]
            if rs:
                per[g] = {t: group_estimate(rs, labels, t, alpha) for t in TARGETS}
        out[v] = per
    return out


def _paired(rows: list[dict], labels: dict, a: str, b: str, group: str, target: str) -> tuple[list, list, int]:
    """(every question's predictions (f_a, f_b); the labelled questions' (f_a, f_b, y_a, y_b); the
    number of questions both variants' gates declined) over the questions of `group` both answered.

    A gate row's value is known (0), so a question counts as labelled when each of its two
    answers is a gate decline or carries a matching label. Questions where both were gated are
    known exactly (difference 0) and kept out of the sample: counting them there would make it
    non-uniform. On general and safety probes a gate decline measures nothing: left out."""
    slices = _groups([r["slice"] for r in rows]).get(group, (group,))

    def table(v: str) -> dict:
        return {(r["slice"], r["id"]): r for r in rows if r["variant"] == v and r["slice"] in slices
                and not (r.get("outcome") == GATE and r["slice"] in OWN)}

    def truth(r: dict) -> float | None:
        if r.get("outcome") == GATE:
            return 0.0
        lab = _label_of(r, labels)
        return None if lab is None else human_value(lab, target)

    ta, tb = table(a), table(b)
    shared = sorted(set(ta) & set(tb))
    keys = [k for k in shared if not (ta[k].get("outcome") == GATE and tb[k].get("outcome") == GATE)]
    f = lambda r: prediction(r["outcome"], target)
    auto = [(f(ta[k]), f(tb[k])) for k in keys]
    labelled = [(f(ta[k]), f(tb[k]), x, y) for k in keys
                if (x := truth(ta[k])) is not None and (y := truth(tb[k])) is not None]
    return auto, labelled, len(shared) - len(keys)


def corrected_difference(rows: list[dict], labels: dict, a: str, b: str, group: str = "answerable",
                         target: str = "correct", alpha: float = 0.05) -> dict:
    """`paired_estimate` of rate(a) - rate(b) on the questions of `group` both variants answered
    (see `_paired` for gate declines), plus a, b, group and target."""
    auto, lab, known = _paired(rows, labels, a, b, group, target)
    fa, fb, ya, yb = (list(c) for c in zip(*lab)) if lab else ([], [], [], [])
    out = paired_estimate([x for x, _ in auto], [y for _, y in auto], fa, fb, ya, yb, alpha)
    out = _with_known(out, [0.0] * known)
    out["diff"] = out["corrected"] if out["corrected"] is not None else out["automatic"]
    out.update(a=a, b=b, group=group, target=target)
    return out


def questions_to_label(rows: list[dict], labels: dict, a: str, b: str, half_width: float,
                       group: str = "answerable", target: str = "correct", alpha: float = 0.05) -> int:
    """How many questions (each with both answers labelled) the paired interval of rate(a) -
    rate(b) needs for this half-width: `labels_needed` on the per-question differences, with the
    worst case var <= 1 of a difference before MIN_PLANNING_LABELS labelled questions exist. The label queue labels
    every variant's answer to each drawn question, so the answers to label are about this times
    the number of variants."""
    auto, lab, _ = _paired(rows, labels, a, b, group, target)
    return labels_needed([x - y for x, y in auto], [fa - fb for fa, fb, _, _ in lab], [ya - yb for _, _, ya, yb in lab],
                         half_width, value_range=2.0, alpha=alpha)
