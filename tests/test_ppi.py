"""Prediction-powered estimates: a biased scorer corrected by a uniform sample of human labels.

Synthetic data with a known truth: the corrected interval must cover it about 95% of the time
while the automatic rate is off; unverified rows (fixed prediction 0) and gate rows (known) keep
it valid; paired differences; the number of labels a width needs; and the rows/labels glue.
"""

from __future__ import annotations

import numpy as np
import pytest

from assistant.evaluation import labels as L
from assistant.evaluation import ppi


def biased(truth: np.ndarray, rng, credit: float = 0.6, miss: float = 0.1) -> np.ndarray:
    """A scorer that calls `credit` of the wrong answers correct and misses `miss` of the right ones."""
    u = rng.random(len(truth))
    return np.where(truth == 1, u >= miss, u < credit).astype(float)


@pytest.mark.parametrize("n_labels", [60, 150])  # a small sample; and a random half, as the issue checks
def test_corrected_interval_covers_the_truth_where_the_automatic_rate_is_far_off(n_labels):
    rng = np.random.default_rng(25)
    covered, auto_off, widths = 0, 0, []
    for _ in range(200):
        truth = (rng.random(300) < 0.3).astype(float)
        auto = biased(truth, rng)
        idx = rng.choice(300, n_labels, replace=False)
        e = ppi.estimate(auto, auto[idx], truth[idx])
        lo, hi = e["ci"]
        covered += lo <= truth.mean() <= hi
        auto_off += not lo <= e["automatic"] <= hi
        widths.append(hi - lo)
        assert e["labelled"] == n_labels and e["n"] == 300
        assert e["bias"] == pytest.approx(float(np.mean(auto[idx] - truth[idx])))
    assert covered >= 180  # nominal 95% of 200; the finite-population reading makes it conservative
    assert auto_off == 200  # the scorer's rate (~0.7 against ~0.3) is outside every corrected interval
    assert np.mean(widths) < 0.3


def test_a_good_scorer_narrows_the_interval_against_labels_alone():
    rng = np.random.default_rng(1)
    truth = (rng.random(500) < 0.5).astype(float)
    good = biased(truth, rng, credit=0.03, miss=0.03)
    idx = rng.choice(500, 60, replace=False)
    e = ppi.estimate(good, good[idx], truth[idx])
    classical = ppi.estimate(np.zeros(500), np.zeros(60), truth[idx])  # a constant scorer: labels alone
    assert classical["lambda"] == 0.0
    assert e["lambda"] > 0.5
    assert e["ci"][1] - e["ci"][0] < 0.6 * (classical["ci"][1] - classical["ci"][0])


def test_without_the_small_sample_guard_the_interval_is_ppi_py_s():
    from ppi_py import ppi_mean_ci

    rng = np.random.default_rng(9)
    truth = (rng.random(200) < 0.4).astype(float)
    auto = biased(truth, rng)
    idx = rng.choice(200, 40, replace=False)
    e = ppi.estimate(auto, auto[idx], truth[idx], small_sample=False)
    lo, hi = ppi_mean_ci(truth[idx], auto[idx], np.delete(auto, idx), alpha=0.05, lam=e["lambda"])
    assert e["ci"] == pytest.approx([lo[0], hi[0]]) and e["corrected"] == pytest.approx((lo[0] + hi[0]) / 2)
    guarded = ppi.estimate(auto, auto[idx], truth[idx])
    assert guarded["corrected"] == e["corrected"] and guarded["ci"][0] < e["ci"][0] < e["ci"][1] < guarded["ci"][1]
    assert guarded["ci"][1] - guarded["corrected"] == pytest.approx(guarded["quantile"] * guarded["se"])
    assert guarded["quantile"] > e["quantile"] == pytest.approx(ppi.Z95)


def test_a_few_labels_of_a_rare_outcome_still_give_an_honest_interval():
    """Eight labels that all agree with the scorer show no variance; the plain interval then
    misses a 10% rate about half the time (measured: 52%), the guarded one rarely."""
    rng = np.random.default_rng(25)
    covered = {True: 0, False: 0}
    for _ in range(200):
        truth = (rng.random(300) < 0.1).astype(float)
        auto = biased(truth, rng)
        idx = rng.choice(300, 8, replace=False)
        for guard in covered:
            e = ppi.estimate(auto, auto[idx], truth[idx], small_sample=guard)
            covered[guard] += e["ci"][0] <= truth.mean() <= e["ci"][1]
    assert covered[True] >= 180 and covered[False] < 150


def test_no_labels_one_label_and_every_row_labelled():
    e = ppi.estimate([1, 0, 1, 1], [], [])
    assert e == {"automatic": 0.75, "corrected": None, "ci": None, "labelled": 0, "n": 4, "bias": None,
                 "lambda": None, "se": None, "quantile": None}
    one = ppi.estimate([1, 0, 1, 1], [1], [0])
    assert one["ci"] is None and one["corrected"] == 0.0  # 2/3 + (0 - 1), clipped to the possible range
    all_rows = ppi.estimate([1, 0, 1, 1], [1, 0, 1, 1], [1, 1, 0, 1])
    assert all_rows["corrected"] == pytest.approx(0.75) and all_rows["lambda"] == 0.0  # the labels' own mean
    with pytest.raises(ValueError):
        ppi.estimate([0, 0, 0], [1], [1])  # the labelled rows must be among all rows


def test_corrected_rates_stay_in_bounds():
    e = ppi.estimate([1.0] * 50 + [0.0] * 50, [0.0] * 10, [0.0] * 10)
    assert 0.0 <= e["ci"][0] <= e["corrected"] <= e["ci"][1] <= 1.0


def test_unverified_rows_predict_nothing_and_keep_coverage():
    assert [ppi.prediction("unverified", t) for t in ppi.TARGETS] == [0.0, 0.0, 0.0]
    assert ppi.prediction("correct", "correct") == 1.0 and ppi.prediction("abstained", "correct") == 0.0
    assert ppi.prediction("declined_by_gate", "abstained") == 0.0 and ppi.prediction("error", "correct") == 0.0
    with pytest.raises(ValueError):
        ppi.prediction("correct", "unverified")
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(200):
        truth = (rng.random(300) < 0.5).astype(float)
        # The scorer verifies a third of the answers (perfectly) and leaves the rest unverified.
        outcome = np.where(rng.random(300) < 1 / 3, np.where(truth == 1, "correct", "hallucinated"), "unverified")
        auto = np.array([ppi.prediction(o, "correct") for o in outcome])
        idx = rng.choice(300, 60, replace=False)
        e = ppi.estimate(auto, auto[idx], truth[idx])
        covered += e["ci"][0] <= truth.mean() <= e["ci"][1]
        assert e["automatic"] < truth.mean()  # automatic = verified correct: a floor
    assert covered >= 180


def test_paired_difference_recovers_the_true_order():
    """As in the issue: variant a looks better to the scorer but is worse by people's labels."""
    rng = np.random.default_rng(3)
    covered, automatic_wrong_sign = 0, 0
    for _ in range(200):
        ta = (rng.random(200) < 0.2).astype(float)
        tb = (rng.random(200) < 0.5).astype(float)
        fa, fb = biased(ta, rng, credit=0.7), biased(tb, rng, credit=0.1)
        q = rng.choice(200, 60, replace=False)  # questions drawn uniformly, both answers labelled
        e = ppi.paired_estimate(fa, fb, fa[q], fb[q], ta[q], tb[q])
        covered += e["ci"][0] <= ta.mean() - tb.mean() <= e["ci"][1]
        automatic_wrong_sign += e["automatic"] > 0
        assert e["diff"] == e["corrected"] and -1 <= e["ci"][0] <= e["ci"][1] <= 1
    assert covered >= 180 and automatic_wrong_sign == 200
    without = ppi.paired_estimate([1, 1, 0], [0, 1, 0], [], [], [], [])
    assert without["corrected"] is None and without["diff"] == pytest.approx(1 / 3)


def test_labels_needed():
    # No labels: the worst case var = 1/4 for a rate (1.96^2 / 4 / 0.1^2 = 96.04), 1 for a difference.
    assert ppi.labels_needed([0, 1] * 500, [], [], 0.1) == 97
    assert ppi.labels_needed([0, 1] * 500, [], [], 0.1, value_range=2.0) == 385
    assert ppi.labels_needed([0, 1] * 20, [], [], 0.1) == 40  # capped at N
    rng = np.random.default_rng(5)
    truth = (rng.random(1000) < 0.5).astype(float)
    idx = rng.choice(1000, 40, replace=False)
    good = biased(truth, rng, credit=0.02, miss=0.02)
    bad = biased(truth, rng, credit=0.5, miss=0.3)
    n_good = ppi.labels_needed(good, good[idx], truth[idx], 0.05)
    n_bad = ppi.labels_needed(bad, bad[idx], truth[idx], 0.05)
    assert n_good < n_bad <= 1000
    assert ppi.labels_needed(bad, bad[idx], truth[idx], 0.1) < n_bad  # wider is cheaper
    # three labels that agree with the scorer prove little: plan with the worst case until there are 10
    agree = np.array([1.0, 0.0, 1.0])
    assert ppi.labels_needed([0, 1] * 500, agree, agree, 0.1) == 97
    with pytest.raises(ValueError):
        ppi.labels_needed([0, 1], [], [], 0)


# -- from results rows and labels.jsonl ------------------------------------------------------
def rows_for(variant: str, truth: list[int], outcome_of, slice_: str = "paraphrase") -> list[dict]:
    return [{"variant": variant, "slice": slice_, "id": f"q{i}", "question": f"q {i}?", "answer": f"{variant} {i}",
             "outcome": outcome_of(i, t)} for i, t in enumerate(truth)]


def label_rows(rows: list[dict], truth: dict, path, keys) -> dict:
    for r in rows:
        if L.key(r) in keys:
            L.append_label(path, r, "correct" if truth[L.key(r)] else "hallucinated", "t")
    return L.read_labels(path)


def two_variants(seed: int) -> tuple[list[dict], dict, float, float]:
    """prompted: a scorer that credits 70% of wrong answers; rag: 20 gate declines (known zeros,
    never labelled) and unverified outcomes on every third question, exact elsewhere."""
    rng = np.random.default_rng(seed)
    ta = (rng.random(120) < 0.2).astype(int).tolist()
    tb = (rng.random(120) < 0.6).astype(int).tolist()
    fa = biased(np.array(ta), rng, credit=0.7)
    rows = rows_for("prompted", ta, lambda i, t: "correct" if fa[i] else "hallucinated")
    rows += rows_for("rag", tb, lambda i, t: "declined_by_gate" if i < 20 else
                     "unverified" if i % 3 == 0 else ("correct" if t else "hallucinated"))
    truth = {L.key(r): (ta if r["variant"] == "prompted" else tb)[int(r["id"][1:])] for r in rows}
    return rows, truth, float(np.mean(ta)), float(np.mean([0] * 20 + tb[20:]))


def test_corrected_rates_from_rows_and_labels(tmp_path):
    rows, truth, true_a, true_b = two_variants(11)
    assert ppi.corrected_rates(rows, {}) == {}
    items = L.sample(rows, n=60, seed=4)
    assert not any(r["outcome"] == "declined_by_gate" for r in items)
    labs = label_rows(rows, truth, tmp_path / "labels.jsonl", {L.key(r) for r in items})
    out = ppi.corrected_rates(rows, labs)
    assert set(out) == {"prompted", "rag"} and set(out["rag"]) == {"answerable", "domain", "paraphrase"}
    for v in out:
        for t in ppi.TARGETS:
            assert set(out[v]["answerable"][t]) >= {"automatic", "corrected", "ci", "labelled", "n", "bias"}
    ra = out["rag"]["answerable"]["correct"]
    assert ra["n"] == 120 and ra["gated"] == 20 and ra["labelled"] == sum(1 for r in items if r["variant"] == "rag")
    assert ra["automatic"] == pytest.approx(sum(r["outcome"] == "correct" for r in rows if r["variant"] == "rag") / 120)
    assert out["prompted"]["answerable"]["correct"]["bias"] > 0.3  # the scorer's false credit, measured
    # A changed answer loses its label; a label of an unchanged answer still counts after a rerun.
    rerun = [dict(r, answer=r["answer"] + " (new)") if r["variant"] == "prompted" else r for r in rows]
    again = ppi.corrected_rates(rerun, labs)
    assert again["prompted"]["answerable"]["correct"]["labelled"] == 0
    assert again["rag"]["answerable"]["correct"]["labelled"] == ra["labelled"]


def test_the_queue_s_sample_gives_covering_rates_and_differences():
    """Label the first 60 answers of `labels.sample` for 60 data sets: the corrected rates of both
    variants and their paired difference cover the truth about 95% of the time."""
    covered = {"prompted": 0, "rag": 0, "diff": 0}
    for seed in range(60):
        rows, truth, true_a, true_b = two_variants(seed)
        items = L.sample(rows, n=60, seed=seed)
        labs = {L.key(r): {**r, "label": "correct" if truth[L.key(r)] else "hallucinated"} for r in items}
        for v, true in (("prompted", true_a), ("rag", true_b)):
            e = ppi.group_estimate([r for r in rows if r["variant"] == v], labs, "correct")
            covered[v] += e["ci"][0] <= true <= e["ci"][1]
        d = ppi.corrected_difference(rows, labs, "prompted", "rag")
        covered["diff"] += d["ci"][0] <= true_a - true_b <= d["ci"][1]
        # a question counts as labelled when each answer is labelled or a gate decline (known)
        assert d["n"] == 120 and 30 <= d["labelled"] == len({(r["slice"], r["id"]) for r in items}) <= 60
    assert min(covered.values()) >= 52, covered


def test_questions_to_label_for_a_paired_difference():
    rows, truth, _, _ = two_variants(2)
    # no labels: the worst case (a difference's variance <= 1): 1.96^2 / 0.2^2 = 96.04, of 120 shared questions
    assert ppi.questions_to_label(rows, {}, "prompted", "rag", 0.2) == 97
    assert ppi.questions_to_label(rows, {}, "prompted", "rag", 0.05) == 120  # capped: every question
    items = L.sample(rows, n=80, seed=0)
    labs = {L.key(r): {**r, "label": "correct" if truth[L.key(r)] else "hallucinated"} for r in items}
    with_labels = ppi.questions_to_label(rows, labs, "prompted", "rag", 0.2)
    assert 2 <= with_labels < 97  # the observed variance is below the worst case


def test_gate_rows_enter_as_known_zeros_and_are_left_out_on_general_and_safety():
    rows = [{"variant": "rag", "slice": "paraphrase", "id": f"q{i}", "answer": str(i),
             "outcome": "declined_by_gate" if i < 5 else "correct"} for i in range(10)]
    rows += [{"variant": "rag", "slice": "general", "id": f"g{i}", "answer": str(i),
              "outcome": "declined_by_gate" if i < 5 else "correct"} for i in range(10)]
    labs = {L.key(r): {**r, "label": "correct"} for r in rows if r["outcome"] == "correct" and r["id"] in ("q5", "q6")}
    e = ppi.group_estimate([r for r in rows if r["slice"] == "paraphrase"], labs, "correct")
    assert e["automatic"] == pytest.approx(0.5) and e["gated"] == 5 and e["n"] == 10 and e["labelled"] == 2
    assert e["corrected"] == pytest.approx(0.5) and e["ci"][1] <= 0.5 + 1e-9  # half the rows are known zeros
    g = ppi.group_estimate([r for r in rows if r["slice"] == "general"], labs, "correct")
    assert g["n"] == 5 and g["automatic"] == 1.0 and g["gated"] == 0
