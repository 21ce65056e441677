"""The recommendation: which variant to ship, decided by rules from `corpus.yaml` (VerdictRules).

1. Accuracy is measured on the domain slices (paraphrase + unseen + unanswerable), where the
   variants differ in what they know.
2. The best fine-tuned variant (sft, rag_sft) is recommended only when, against the best variant
   without fine-tuning, it gains at least `margin` accuracy with an exact McNemar p < `alpha`, its
   hallucination rate does not rise significantly (by more than `max_hallucination_rise` with
   p < alpha), it keeps general knowledge (general-slice accuracy no more than `max_forgetting`
   below the same variant without fine-tuning: `prompted` for sft, `rag` for rag_sft) and its
   refusals (safety-slice refusal rate no more than `max_refusal_loss` below that reference). These
   two are plain drops, not significance tests: the general and safety suites are small (tens of
   probes), where a test would let large losses through.
3. Otherwise the recommendation is the cheapest variant (`cost_order`) among those without
   fine-tuning that is statistically tied with the best of them: McNemar p >= alpha on correctness
   and no significant rise in hallucination.
"""

from __future__ import annotations

from collections import defaultdict

from ..config import VerdictRules
from .stats import mcnemar, rate

DOMAIN = ("paraphrase", "unseen", "unanswerable")
FINE_TUNED = ("sft", "rag_sft")
UNTUNED = {"sft": "prompted", "rag_sft": "rag"}  # each fine-tuned variant served without its adapter


def _flags(rows: list[dict], slices: tuple[str, ...], outcome: str) -> dict[str, dict[str, bool]]:
    """variant -> question key -> (outcome == wanted) over the given slices."""
    table: dict[str, dict[str, bool]] = defaultdict(dict)
    for r in rows:
        if r["slice"] in slices:
            table[r["variant"]][f"{r['slice']}:{r['id']}"] = r["outcome"] == outcome
    return table


def _test(table: dict[str, dict[str, bool]], a: str, b: str) -> dict:
    keys = sorted(set(table.get(a, {})) & set(table.get(b, {})))
    return mcnemar([table[a][k] for k in keys], [table[b][k] for k in keys])


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def ci(r: dict) -> str:
    if r.get("rate") is None:
        return "n/a"
    return f"{pct(r['rate'])} (95% CI {pct(r['lo'])}-{pct(r['hi'])}, n={r['n']})"


def pval(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def cost_rank(variant: str, rules: VerdictRules, costs: dict | None = None) -> tuple:
    order = rules.cost_order.index(variant) if variant in rules.cost_order else len(rules.cost_order)
    measured = (costs or {}).get(variant, {})
    return order, (measured.get("build_time_s") or 0) + (measured.get("latency_p50_s") or 0)


def _cost_words(v: str, costs: dict | None) -> str:
    """'12 s to build, 1.90 s median latency and 420 prompt tokens per answer' (or '' when unmeasured)."""
    c = (costs or {}).get(v, {})
    parts = []
    if c.get("build_time_s") is not None:
        parts.append(f"{c['build_time_s']:.0f} s to build")
    if c.get("latency_p50_s") is not None:
        parts.append(f"{c['latency_p50_s']:.2f} s median latency")
    if c.get("prompt_tokens_mean") is not None:
        parts.append(f"{c['prompt_tokens_mean']:.0f} prompt tokens per answer")
    return ", ".join(parts[:-1]) + f" and {parts[-1]}" if len(parts) > 1 else "".join(parts)


def _costs_sentence(a: str, b: str | None, costs: dict | None) -> str:
    ca, cb = _cost_words(a, costs), _cost_words(b, costs) if b else ""
    if not ca:
        return ""
    return f"{a} costs {ca}" + (f", against {cb} for {b}." if cb else ".")


def decide(rows: list[dict], rules: VerdictRules, costs: dict | None = None, n_resamples: int = 2000,
           seed: int = 0, min_slice_size: int = 20) -> dict:
    """Apply the rules to per-question outcomes (rows: variant, slice, id, outcome)."""
    correct = _flags(rows, DOMAIN, "correct")
    halluc = _flags(rows, DOMAIN, "hallucinated")
    general = _flags(rows, ("general",), "correct")
    safety = _flags(rows, ("safety",), "correct")
    variants = sorted({r["variant"] for r in rows}, key=lambda v: cost_rank(v, rules, costs))
    acc = {v: rate(list(correct[v].values()), n_resamples, seed) for v in variants if correct.get(v)}
    hal = {v: rate(list(halluc[v].values()), n_resamples, seed) for v in variants if halluc.get(v)}
    gen = {v: rate(list(general[v].values()), n_resamples, seed) for v in variants if general.get(v)}
    saf = {v: rate(list(safety[v].values()), n_resamples, seed) for v in variants if safety.get(v)}
    out = {"recommendation": None, "text": "", "rules": rules.model_dump(), "accuracy": acc,
           "hallucination": hal, "general": gen, "safety": saf, "fine_tune": None}
    notes = _notes(variants, acc, saf, min_slice_size, rules)
    if not acc:
        out["text"] = "No domain questions (paraphrase, unseen, unanswerable) were evaluated, so there is " \
                      "nothing to recommend from. " + " ".join(notes)
        return out
    scored = [v for v in variants if v in acc]
    best_of = lambda pool: max(pool, key=lambda v: (acc[v]["rate"], -hal.get(v, {"rate": 0})["rate"],
                                                  [-x for x in cost_rank(v, rules, costs)]))
    if len(scored) == 1:
        v = scored[0]
        out["recommendation"] = v
        out["text"] = (f"Only {v} was evaluated, so nothing was compared: on the domain questions it answered "
                       f"{ci(acc[v])} correctly and hallucinated on {pct(hal[v]['rate'])}. Build and evaluate "
                       f"the other variants (assistant compare) for a recommendation. " + " ".join(notes)).strip()
        return out

    tuned = [v for v in scored if v in FINE_TUNED]
    plain = [v for v in scored if v not in FINE_TUNED]
    text = []
    if tuned and plain:
        ft, base = best_of(tuned), best_of(plain)
        check = _check_fine_tune(ft, base, correct, halluc, general, safety, acc, hal, gen, saf, rules, scored)
        out["fine_tune"] = check
        if check["passed"]:
            out["recommendation"] = ft
            text.append(f"Recommendation: fine-tune ({ft}). On the domain questions it answered {ci(acc[ft])} "
                        f"correctly against {ci(acc[base])} for {base}, the best variant without fine-tuning: "
                        f"+{100 * check['gain']:.0f} points, McNemar {pval(check['p'])}, above the required "
                        f"{100 * rules.margin:.0f}-point margin. Hallucination: {pct(hal[ft]['rate'])} for {ft}, "
                        f"{pct(hal[base]['rate'])} for {base}. {check['kept']} {_costs_sentence(ft, base, costs)}")
            out["text"] = " ".join(text + notes)
            return out
        text.append(f"Fine-tuning is not recommended: the best fine-tuned variant, {ft}, answered {ci(acc[ft])} "
                    f"correctly against {ci(acc[base])} for {base} ({'+' if check['gain'] >= 0 else ''}"
                    f"{100 * check['gain']:.0f} points, McNemar {pval(check['p'])}), and "
                    f"{'; '.join(check['failed'])}.")
        pool = plain
    else:
        pool = plain or tuned
    best = best_of(pool)
    tied = [v for v in pool if v == best or (_test(correct, v, best)["p"] >= rules.alpha
                                            and not _worse_hallucination(halluc, hal, v, best, rules))]
    pick = min(tied, key=lambda v: cost_rank(v, rules, costs))
    out["recommendation"] = pick
    out["tied_with_best"] = tied
    if pick == best:
        others = [v for v in pool if v != best]
        cheaper = [v for v in others if cost_rank(v, rules, costs) < cost_rank(best, rules, costs)]
        tests = ", ".join(f"{v} {pct(acc[v]['rate'])} (McNemar {pval(_test(correct, best, v)['p'])})" for v in others)
        text.append(f"Recommendation: {pick}. It answered {ci(acc[pick])} of the domain questions correctly, with "
                    f"{pct(hal[pick]['rate'])} hallucinated answers"
                    + (f"; no cheaper variant is statistically tied with it: {tests}." if cheaper
                       else f"; it is also the cheapest candidate. The others: {tests}." if tests else ".")
                    + (f" {_costs_sentence(pick, None, costs)}" if _cost_words(pick, costs) else ""))
    else:
        p = _test(correct, pick, best)["p"]
        text.append(f"Recommendation: {pick}, the cheapest variant statistically tied with the best. {best} "
                    f"answered {ci(acc[best])} of the domain questions correctly and {pick} {ci(acc[pick])}; "
                    f"the difference is not significant (McNemar {pval(p)}), and {pick} hallucinated on "
                    f"{pct(hal[pick]['rate'])} against {pct(hal[best]['rate'])}. {_costs_sentence(pick, best, costs)}")
    out["text"] = " ".join(text + notes)
    return out


def _worse_hallucination(halluc, hal, v: str, ref: str, rules: VerdictRules) -> bool:
    rise = hal[v]["rate"] - hal[ref]["rate"]
    return rise > rules.max_hallucination_rise and _test(halluc, v, ref)["p"] < rules.alpha


def _check_fine_tune(ft, base, correct, halluc, general, safety, acc, hal, gen, saf, rules, scored) -> dict:
    gain = acc[ft]["rate"] - acc[base]["rate"]
    p = _test(correct, ft, base)["p"]
    failed, kept = [], []
    if gain < rules.margin:
        failed.append(f"its gain is below the {100 * rules.margin:.0f}-point margin")
    if p >= rules.alpha:
        failed.append(f"the difference is not significant at alpha = {rules.alpha}")
    if _worse_hallucination(halluc, hal, ft, base, rules):
        failed.append(f"it hallucinates significantly more ({pct(hal[ft]['rate'])} vs {pct(hal[base]['rate'])}, "
                      f"McNemar {pval(_test(halluc, ft, base)['p'])})")
    # Forgetting and lost refusals are what the fine-tune itself changes, so the reference is the same
    # variant without its adapter: rag_sft against rag (same retrieval, same abstention below the score
    # threshold), sft against prompted. Comparing rag_sft with prompted would blame the adapter for
    # retrieval abstaining on off-domain questions.
    ref = next((v for v in (UNTUNED.get(ft), "prompted", base) if v in scored), base)
    for name, table, limit, what in (("general", gen, rules.max_forgetting, "general-knowledge accuracy"),
                                     ("safety", saf, rules.max_refusal_loss, "refusal rate on unsafe requests")):
        if ft in table and ref in table:
            drop = table[ref]["rate"] - table[ft]["rate"]
            if drop > limit:
                failed.append(f"its {what} fell from {pct(table[ref]['rate'])} ({ref}) to {pct(table[ft]['rate'])}, "
                              f"more than the {100 * limit:.0f} points allowed")
            else:
                kept.append(f"{what} ({pct(table[ft]['rate'])} against {pct(table[ref]['rate'])} for {ref})")
        else:
            kept.append(f"the {name} slice was not evaluated, so {what} is unchecked")
    return {"variant": ft, "against": base, "gain": gain, "p": p, "passed": not failed, "failed": failed,
            "kept": ("It kept its " + " and its ".join(kept) + ".") if kept else ""}


def _notes(variants, acc, saf, min_slice_size, rules) -> list[str]:
    notes = []
    n = max((a["n"] for a in acc.values()), default=0)
    if 0 < n < min_slice_size:
        notes.append(f"Caution: only {n} domain questions were evaluated, too few to conclude; small differences "
                     f"cannot reach significance at this size.")
    base = "prompted" if "prompted" in saf else None
    if base and saf[base]["rate"] is not None and saf[base]["rate"] < rules.weak_refusal_rate:
        s = saf[base]
        small = f" (only {s['n']} probes: a rough figure)" if s["n"] < min_slice_size else ""
        notes.append(f"Plainly: the base model barely refuses: it declined {round(s['rate'] * s['n'])} of {s['n']} "
                     f"unsafe requests ({pct(s['rate'])}){small}, so there are few refusals a fine-tune could lose "
                     f"and this assistant should not be deployed without a separate safety filter.")
    return notes
