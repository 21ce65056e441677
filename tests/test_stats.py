"""Statistics: exact McNemar against hand-computed values, seeded bootstrap, win/tie/loss."""

from __future__ import annotations

import pytest

from assistant.evaluation import stats


def pairs(a_only: int, b_only: int, both: int = 0, neither: int = 0) -> tuple[list[bool], list[bool]]:
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    return a, b


@pytest.mark.parametrize("a_only, b_only, p", [
    (0, 6, 2 * 0.5 ** 6),  # 0.03125
    (10, 2, 2 * (1 + 12 + 66) / 4096),  # two-sided binomial tail, 0.03857
    (3, 3, 1.0),
    (0, 0, 1.0),  # no discordant pair: no evidence of a difference
    (1, 0, 1.0),
])
def test_exact_mcnemar_known_values(a_only, b_only, p):
    a, b = pairs(a_only, b_only, both=7, neither=5)
    m = stats.mcnemar(a, b)
    assert m["p"] == pytest.approx(p, rel=1e-9)
    assert (m["a_only"], m["b_only"], m["n"]) == (a_only, b_only, a_only + b_only + 12)


def test_mcnemar_ignores_concordant_pairs():
    # Same discordant pairs, many more ties: the p-value must not change.
    assert stats.mcnemar(*pairs(8, 1))["p"] == pytest.approx(stats.mcnemar(*pairs(8, 1, 50, 50))["p"])


def test_mcnemar_rejects_unpaired_samples():
    with pytest.raises(ValueError):
        stats.mcnemar([True], [True, False])


def test_bootstrap_is_reproducible_with_a_seed_and_covers_the_mean():
    x = [1] * 30 + [0] * 20
    first = stats.bootstrap_ci(x, 2000, seed=7)
    assert first == stats.bootstrap_ci(x, 2000, seed=7)
    assert first != stats.bootstrap_ci(x, 2000, seed=8)
    lo, hi = first
    assert lo < 0.6 < hi and 0.4 < lo and hi < 0.8  # binomial SE ~0.07 around 0.6


def test_bootstrap_degenerate_samples():
    assert stats.bootstrap_ci([], 1000) == (None, None)
    assert stats.bootstrap_ci([1, 1, 1], 1000) == (1.0, 1.0)
    assert stats.rate([False] * 4) == {"rate": 0.0, "lo": 0.0, "hi": 0.0, "n": 4}


def test_ratio_interval_resamples_rows():
    lo, hi = stats.ratio_ci([1, 0, 2, 0, 1, 0], [2, 1, 3, 1, 2, 1], 2000, seed=0)
    assert lo < 4 / 10 < hi
    assert stats.ratio_ci([0, 0], [0, 0]) == (None, None)


def test_pairwise_win_tie_loss_over_shared_questions():
    table = {"prompted": {"q1": False, "q2": False, "q3": True, "q4": False},
             "rag": {"q1": True, "q2": True, "q3": True, "q5": True}}  # q4/q5 not shared
    [row] = stats.paired(table)
    assert (row["a"], row["b"], row["n"]) == ("prompted", "rag", 3)
    assert (row["win"], row["tie"], row["loss"]) == (0, 1, 2)
    assert row["p"] == pytest.approx(0.5)  # 2 discordant pairs, both for rag


def test_paired_difference_interval_is_seeded_and_paired():
    a, b = pairs(12, 4, both=30, neither=14)  # 60 questions: a right on 8 more
    d = stats.paired_difference(a, b, 2000, seed=3)
    assert d["diff"] == pytest.approx(8 / 60) and d["n"] == 60
    assert d["lo"] < 8 / 60 < d["hi"] and d == stats.paired_difference(a, b, 2000, seed=3)
    # Pairing matters: the same accuracies with no disagreement give a zero-width interval.
    same = stats.paired_difference(*pairs(0, 0, both=30, neither=30))
    assert (same["diff"], same["lo"], same["hi"], same["sd"]) == (0.0, 0.0, 0.0, 0.0)
    assert stats.paired_difference([], [])["diff"] is None


def test_questions_to_decide_from_the_observed_discordance():
    # 20% of questions discordant, difference 5 points: per-question sd = sqrt(0.2 - 0.05^2).
    sd = (0.2 - 0.05 ** 2) ** 0.5
    z = 1.959963984540054 + 0.8416212335729143
    assert stats.questions_to_decide(0.05, sd, margin=0.05) == int(-(-(z * sd / 0.05) ** 2 // 1))
    # A difference near zero is decided by equating it: half-width below margin - |diff|.
    assert stats.questions_to_decide(0.01, sd, 0.05) == int(-(-(z * sd / 0.04) ** 2 // 1))
    assert stats.questions_to_decide(0.05, sd, 0.05, power=0.9) > stats.questions_to_decide(0.05, sd, 0.05)
    assert stats.questions_to_decide(0.0, 0.0, 0.05) is None  # nothing disagrees: nothing to learn
