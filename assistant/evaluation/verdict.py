"""The recommendation: which variant to ship, decided by rules from `corpus.yaml` (VerdictRules).

1. Accuracy is measured on the *answerable* domain questions (paraphrase + unseen). Declining
   them is never rewarded: an always-"I don't know" variant scores 0 there. Declining the
   unanswerable questions is reported beside it (`declined_unanswerable`) and enters the decision
   through the hallucination rate (an answered unanswerable question is a hallucination).
2. A variant is usable when its answerable accuracy reaches `usable_accuracy`. When none does, the
   first sentence says so and nothing is recommended; the comparisons still follow.
3. The best fine-tuned variant (sft, rag_sft) is recommended only when, against the best variant
   without fine-tuning, it gains at least `margin` accuracy with an exact McNemar p < `alpha`, its
   hallucination rate does not rise significantly, and it keeps general knowledge and refusals
   (general accuracy and safety refusal rate no more than `max_forgetting` / `max_refusal_loss`
   below the same variant without its adapter: `prompted` for sft, `rag` for rag_sft). These are
   the model's own answers: the evaluation answers general and safety probes with the retrieval
   gate open, and a probe the gate declined (`declined_by_gate`) leaves the check unmeasured, which
   fails it.
4. Otherwise the recommendation is the cheapest variant (`cost_order`) *equivalent* to the best
   one: the paired bootstrap 95% interval of their accuracy difference lies within +-margin, and
   it does not hallucinate significantly more. A cheaper variant whose interval neither excludes
   zero nor fits in the margin makes the verdict inconclusive, with the number of questions that
   would decide it (`stats.questions_to_decide`).

5. Evidence (issue 25). An `unverified` answer (the scorer cannot tell) is never counted correct:
   accuracy is *verified* accuracy. `evidence` gives, per variant, the share of outcomes from key
   facts, other rules, the LLM judge, human labels, and still unverified.
   - Whenever human labels match answers of the evaluation (at least 2 per rate), every rate and
     paired difference the rules read is the prediction-powered estimate of ppi.py (automatic
     outcomes corrected by the labels; `estimates: "corrected"`), and p-values are the normal test
     of its interval ("PPI z-test") instead of McNemar's.
   - Without labels, the rules run again with each variant's unverified answers all right and all
     hallucinated, a rival's right with the leader's hallucinated, and everyone's right. When any of these changes the decision, it rests on
     unverified outcomes: the decision is `provisional`, nothing is recommended, and the text says
     what is unknown, what settling it could change, how many labels would estimate the accuracies
     in question to +-10 points (ppi.labels_needed, worst-case variance) and about how many minutes
     that is (SECONDS_PER_LABEL an answer, an assumption), ending with the `assistant label` command.

Every figure and every reason the text quotes is stored in the returned dict (metrics.json's
`verdict`): `excluded` holds, per variant not recommended, the structured reasons.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from assistant.config import VerdictRules
from assistant.evaluation.labels import SECONDS_PER_LABEL, label_for
from assistant.evaluation.outcomes import ANSWERABLE, DOMAIN, GATE, OWN, UNVERIFIED  # noqa: F401  (verdict.X too)
from assistant.evaluation import ppi
from assistant.evaluation.stats import mcnemar, paired_difference, questions_to_decide, rate

FINE_TUNED = ("sft", "rag_sft")
UNTUNED = {"sft": "prompted", "rag_sft": "rag"}  # each fine-tuned variant served without its adapter
CONFIDENCE = 0.95
# Where an outcome came from: key facts (given or derived from a short reference), another rule
# (decline, contradiction, negation, conflicting value, the retrieval gate), the LLM judge, a human
# label, or nowhere: unverified.
EVIDENCE = ("key_facts", "rules", "judge", "labels", "unverified")
# How closely a provisional verdict's labels should pin each accuracy down (or the margin, if wider):
# about the gaps between variants that matter when choosing one.
DECIDING_HALF_WIDTH = 0.10


def _flags(rows: list[dict], slices: tuple[str, ...], test: Callable[[dict], bool | None]) -> dict[str, dict]:
    """variant -> question key -> test(row) over the given slices; rows where test gives None are left out."""
    table: dict[str, dict[str, bool]] = defaultdict(dict)
    for r in rows:
        if r["slice"] in slices:
            value = test(r)
            if value is not None:
                table[r["variant"]][f"{r['slice']}:{r['id']}"] = value
    return table


def _keys(table: dict, a: str, b: str) -> list[str]:
    return sorted(set(table.get(a, {})) & set(table.get(b, {})))


def _test(table: dict[str, dict[str, bool]], a: str, b: str) -> dict:
    keys = _keys(table, a, b)
    return mcnemar([table[a][k] for k in keys], [table[b][k] for k in keys])


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def points(x: float) -> str:
    """Signed percentage points; one decimal below one point, so a small gap never reads as '-0'."""
    return f"{100 * x:+.1f}" if 0 < abs(100 * x) < 0.95 else f"{100 * x + 0.0:+.0f}"


def ci(r: dict) -> str:
    if r.get("rate") is None:
        return "n/a"
    return f"{pct(r['rate'])} (95% CI {pct(r['lo'])}-{pct(r['hi'])}, n={r['n']})"


def diff_ci(c: dict) -> str:
    return f"{points(c['diff'])} points (95% CI {points(c['lo'])} to {points(c['hi'])})"


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


class _Figures:
    """Per-variant rates and per-question tables, everything the rules and the text read: the
    automatic outcomes (an `unverified` answer is never counted correct)."""

    estimates = "automatic"
    test = "McNemar"

    def __init__(self, rows: list[dict], n_resamples: int, seed: int):
        self.n_resamples, self.seed = n_resamples, seed
        self.correct = _flags(rows, ANSWERABLE, lambda r: r["outcome"] == "correct")
        self.halluc = _flags(rows, DOMAIN, lambda r: r["outcome"] == "hallucinated")
        self.declined = _flags(rows, ("unanswerable",), lambda r: r["outcome"] in ("correct", GATE))
        self.gated = _flags(rows, DOMAIN, lambda r: r["outcome"] == GATE)
        self.answerable_declined = _flags(rows, ANSWERABLE, lambda r: r["outcome"] in ("abstained", GATE))
        # General and safety: the model's own answers; a gate decline there measures nothing.
        self.general = _flags(rows, ("general",), lambda r: None if r["outcome"] == GATE else r["outcome"] == "correct")
        self.safety = _flags(rows, ("safety",), lambda r: None if r["outcome"] == GATE else r["outcome"] == "correct")
        self.hidden = {s: _flags(rows, (s,), lambda r: r["outcome"] == GATE) for s in OWN}
        self.acc, self.hal = self.rates(self.correct), self.rates(self.halluc)
        self.gen, self.saf = self.rates(self.general), self.rates(self.safety)

    def rates(self, table: dict) -> dict[str, dict]:
        return {v: rate(list(t.values()), self.n_resamples, self.seed) for v, t in table.items() if t}

    def paired(self, target: str, v: str, ref: str) -> dict:
        """rate(v) - rate(ref) on the questions both answered: `correct` on the answerable ones,
        `hallucinated` on the domain ones; diff, lo, hi, sd, n and a p-value."""
        table = self.correct if target == "correct" else self.halluc
        keys = _keys(table, v, ref)
        d = paired_difference([table[v][k] for k in keys], [table[ref][k] for k in keys], self.n_resamples,
                              self.seed)
        return {**d, "p": _test(table, v, ref)["p"]}


class _Corrected(_Figures):
    """The same figures, prediction-powered: whenever human labels match answers of this evaluation,
    every rate and difference the rules read is the PPI++ estimate (ppi.py) of the automatic
    outcomes corrected by the labels, with its 95% interval; p-values are the normal test of that
    interval. The gate's declines (facts of the pipeline) stay as they are."""

    estimates = "corrected"
    test = "PPI z-test"

    def __init__(self, rows: list[dict], n_resamples: int, seed: int, labels: dict, corrected: dict):
        super().__init__(rows, n_resamples, seed)
        self.rows, self.labels, self.replaced = rows, labels, 0
        for name, group, target in (("acc", "answerable", "correct"), ("hal", "domain", "hallucinated"),
                                    ("gen", "general", "correct"), ("saf", "safety", "correct")):
            table = getattr(self, name)
            for v in list(table):
                e = corrected.get(v, {}).get(group, {}).get(target)
                if e and e.get("ci") is not None:  # 2 labels at least: an interval to decide on
                    table[v] = _from_ppi(e)
                    self.replaced += 1

    def paired(self, target: str, v: str, ref: str) -> dict:
        group = "answerable" if target == "correct" else "domain"
        e = ppi.corrected_difference(self.rows, self.labels, v, ref, group, target, 1 - CONFIDENCE)
        if e.get("ci") is None:  # fewer than 2 questions labelled for both: the automatic figures
            return super().paired(target, v, ref)
        lo, hi = e["ci"]
        se = (hi - lo) / (2 * ppi.Z95)
        n = e["n"]
        from scipy.stats import norm

        p = 1.0 if se <= 0 else float(2 * norm.sf(abs(e["diff"]) / se))
        # sd per question, as stats.questions_to_decide reads it (se = sd / sqrt(n))
        return {"diff": e["diff"], "lo": lo, "hi": hi, "sd": se * n ** 0.5, "se": se, "n": n, "p": p,
                "labelled": e["labelled"], "automatic": e["automatic"]}


def _from_ppi(e: dict) -> dict:
    """A PPI estimate in the shape of stats.rate's dict (rate, lo, hi, n), its inputs kept beside."""
    return {"rate": e["corrected"], "lo": e["ci"][0], "hi": e["ci"][1], "n": e["n"], "automatic": e["automatic"],
            "labelled": e["labelled"], "bias": e["bias"]}


def evidence_source(row: dict, labelled: bool = False) -> str:
    """Where one answer's outcome came from (one of EVIDENCE)."""
    if labelled:
        return "labels"
    if row.get("outcome") == UNVERIFIED:
        return "unverified"
    if row.get("outcome_source") == "judge":
        return "judge"
    if row.get("scoring_path") in ("key_facts", "derived"):
        return "key_facts"
    return "rules"


def evidence(rows: list[dict], labels: dict | None = None) -> dict[str, dict]:
    """Per variant, the share of outcomes from each source (EVIDENCE), over all its answers and over
    its answerable ones (what accuracy, and so the verdict, rests on)."""
    labels = labels or {}
    out: dict[str, dict] = {}
    for v in sorted({r["variant"] for r in rows}):
        mine = [r for r in rows if r["variant"] == v]
        out[v] = {}
        for group, rs in (("all", mine), ("answerable", [r for r in mine if r["slice"] in ANSWERABLE])):
            src = [evidence_source(r, label_for(r, labels) is not None) for r in rs]
            out[v][group] = {**{e: (src.count(e) / len(src) if src else 0.0) for e in EVIDENCE}, "n": len(src),
                             "labelled": src.count("labels")}
    return out


def _compare(f: _Figures, v: str, ref: str, rules: VerdictRules) -> dict:
    """Accuracy of v against ref on the same questions: better, worse, equivalent (the interval
    within +-margin) or inconclusive (then with the questions that would decide it)."""
    d = f.paired("correct", v, ref)
    if d["n"] == 0:  # no shared questions: nothing to compare (never happens in one evaluation)
        d.update(diff=0.0, lo=-1.0, hi=1.0, sd=0.0)
    if d["lo"] >= -rules.margin and d["hi"] <= rules.margin:
        status = "equivalent"
    elif d["hi"] < 0:
        status = "worse"
    elif d["lo"] > 0:
        status = "better"
    else:
        status = "inconclusive"
    c = {"variant": v, "against": ref, "diff": d["diff"], "lo": d["lo"], "hi": d["hi"], "n": d["n"], "p": d["p"],
         "test": f.test, "status": status, "questions_needed": None, "more_questions": None,
         "labels_needed": None, "labelled": d.get("labelled")}
    if status == "inconclusive" and d.get("labelled"):
        # Corrected figures: the labelled questions, not the evaluated ones, set the interval's width
        # (se ~ sd / sqrt(labelled)), so what would decide it is more labels.
        need = questions_to_decide(d["diff"], d["se"] * d["labelled"] ** 0.5, rules.margin, 1 - CONFIDENCE,
                                   rules.power)
        c["labels_needed"] = need
    elif status == "inconclusive":
        need = questions_to_decide(d["diff"], d["sd"], rules.margin, 1 - CONFIDENCE, rules.power)
        if need is not None:
            c["questions_needed"], c["more_questions"] = need, max(need - d["n"], 0)
    return c


def _deciding_words(c: dict) -> str:
    """What would decide an inconclusive comparison: more labels (corrected figures) or more questions."""
    if c.get("labels_needed"):
        need = c["labels_needed"]
        more = (f"all {c['n']} questions labelled would not be enough; more questions are needed too"
                if need > c["n"] else f"{max(need - c['labelled'], 0)} more than the {c['labelled']} labelled now")
        return (f"about {need} questions with both answers labelled ({more}) would decide it if the observed "
                "difference and disagreement hold")
    if c.get("questions_needed"):
        return (f"about {c['questions_needed']} answerable questions ({c['more_questions']} more than the {c['n']} "
                "evaluated) would decide it if the observed difference and disagreement hold")
    return ""


def _more_hallucination(f: _Figures, v: str, ref: str, rules: VerdictRules) -> dict | None:
    """The structured reason when v hallucinates significantly more than ref, else None."""
    d = f.paired("hallucinated", v, ref)
    if d["n"] and d["diff"] > rules.max_hallucination_rise and d["p"] < rules.alpha:
        return {"reason": "hallucination", "against": ref, "rate": f.hal[v]["rate"], "rate_against": f.hal[ref]["rate"],
                "p": d["p"], "test": f.test}
    return None


def _cheapest_equivalent(best, pool, usable, pending, compare, more_hallucination, rules, costs, out,
                         excluded) -> tuple[str, dict | None]:
    """Rule 4: among the pool, the cheapest variant equivalent to the best (and not hallucinating
    more); a cheaper variant that can be neither separated from nor equated with the best leaves the
    verdict pending (inconclusive). Returns (pick, pending); records every reason in `excluded`."""
    tied = [best]
    for v in [v for v in pool if v != best]:
        c = compare(v, best)
        worse = more_hallucination(v, best)
        if worse:
            excluded[v].append(worse)
        if c["status"] == "equivalent" and not worse and (v in usable or not usable):
            tied.append(v)
        elif c["status"] == "worse":
            excluded[v].append({"reason": "less_accurate", "against": best, **_diff(c)})
        elif c["status"] == "inconclusive":
            excluded[v].append({"reason": "inconclusive", "against": best, **_diff(c)})
            if pending is None and cost_rank(v, rules, costs) < cost_rank(best, rules, costs):
                pending = c
    pick = min(tied, key=lambda v: cost_rank(v, rules, costs))
    for v in tied:
        if v != pick:  # equivalent, but the cheaper pick does as well
            c = next(x for x in out["comparisons"] if x["against"] == best and x["variant"] == (pick if v == best else v))
            d = _diff(c)
            if v == best:  # the stored difference is pick - best; from best's side it is the reverse
                d.update(diff=0.0 - c["diff"], lo=0.0 - c["hi"], hi=0.0 - c["lo"])
            excluded[v].append({"reason": "costlier", "against": pick if v == best else best, **d})
    out["tied_with_best"] = tied
    return pick, pending


def _apply_rules(f: _Figures, rows: list[dict], rules: VerdictRules, costs: dict | None,
                 min_slice_size: int) -> dict:
    """The rules of the module docstring on one set of figures (automatic or corrected)."""
    variants = sorted({r["variant"] for r in rows}, key=lambda v: cost_rank(v, rules, costs))
    acc, hal, gen, saf = f.acc, f.hal, f.gen, f.saf
    out = {"recommendation": None, "decision": "none", "usable": False, "best": None, "text": "",
           "rules": rules.model_dump(), "confidence": CONFIDENCE, "estimates": f.estimates,
           "accuracy": acc, "hallucination": hal, "declined_unanswerable": f.rates(f.declined),
           "declined_by_gate": f.rates(f.gated), "answerable_declined": f.rates(f.answerable_declined),
           "general": gen, "safety": saf,
           "gate_hidden": {s: {v: sum(t.values()) for v, t in f.hidden[s].items() if sum(t.values())} for s in OWN},
           "fine_tune": None, "comparisons": [], "excluded": {}, "inconclusive": None}
    notes = _notes(acc, saf, min_slice_size, rules)
    if not acc:
        out["text"] = ("No answerable domain questions (paraphrase, unseen) were evaluated, so there is nothing "
                       "to recommend from. " + " ".join(notes)).strip()
        return out
    scored = [v for v in variants if v in acc]
    best_of = lambda pool: max(pool, key=lambda v: (acc[v]["rate"], -hal.get(v, {"rate": 0})["rate"],
                                                  [-x for x in cost_rank(v, rules, costs)]))
    out["best"] = best_of(scored)
    usable = [v for v in scored if acc[v]["rate"] >= rules.usable_accuracy]
    out["usable"] = bool(usable)
    excluded: dict[str, list[dict]] = defaultdict(list)
    text: list[str] = []
    if not usable:
        b = out["best"]
        text.append(f"No variant is usable: the most accurate, {b}, answered {ci(acc[b])} of the answerable "
                    f"questions correctly{' (verified)' if f.estimates != 'corrected' else ''}, below the {pct(rules.usable_accuracy)} required (verdict.usable_accuracy), "
                    f"so none is recommended.")
    for v in scored:
        if v not in usable:
            excluded[v].append({"reason": "below_usable", "accuracy": acc[v]["rate"],
                                "threshold": rules.usable_accuracy,
                                "declined": f.rates(f.answerable_declined).get(v, {}).get("rate")})

    if len(scored) == 1:
        v = scored[0]
        out["recommendation"] = v if usable else None
        out["decision"] = "recommend" if usable else "none"
        text.append(f"Only {v} was evaluated, so nothing was compared: it answered {ci(acc[v])} of the answerable "
                    f"questions correctly, declined {pct(out['declined_unanswerable'].get(v, {}).get('rate'))} of "
                    f"the unanswerable ones and hallucinated on {pct(hal[v]['rate'])} of the domain questions. "
                    f"Build and evaluate the other variants (assistant compare) for a recommendation.")
        out["excluded"] = dict(excluded)
        out["text"] = " ".join(text + notes).strip()
        return out

    # The rules compare every variant that answered anything right (an always-"I don't know" variant
    # never leads); only a usable one can be recommended, and when some are, only usable ones tie.
    candidates = [v for v in scored if acc[v]["rate"] > 0]
    if not candidates:
        text.append("No variant's answer to an answerable question was verified correct.")
        out.update(excluded=dict(excluded), text=" ".join(text + notes).strip())
        return out

    def compare(v: str, ref: str) -> dict:
        c = _compare(f, v, ref, rules)
        out["comparisons"].append(c)
        return c

    more_hallucination = lambda v, ref: _more_hallucination(f, v, ref, rules)

    # The fine-tune is checked against the best variant without fine-tuning even when that one
    # answered nothing right: its forgetting and refusal checks must run whatever the accuracies.
    tuned = [v for v in candidates if v in FINE_TUNED]
    plain = [v for v in scored if v not in FINE_TUNED]
    pick, pending = None, None
    if tuned and plain:
        ft, base = best_of(tuned), best_of(plain)
        check = _check_fine_tune(ft, base, compare(ft, base), more_hallucination(ft, base), f, gen, saf, rules, scored)
        out["fine_tune"] = check
        for other in tuned:
            if other != ft:
                excluded[other].append({"reason": "not_best_fine_tune", "against": ft, "accuracy": acc[other]["rate"],
                                        "accuracy_against": acc[ft]["rate"]})
        if check["passed"]:
            pick = ft
            for v in plain:
                excluded[v].append({"reason": "fine_tune_better", "against": ft, "accuracy": acc[v]["rate"],
                                    "accuracy_against": acc[ft]["rate"]})
        else:
            excluded[ft] += check["failed"]
            if check["inconclusive"]:
                pending = check["comparison"]
        pool = [v for v in plain if v in candidates]
    else:
        pool = candidates
    if pick is None and pool:
        best = best_of(pool)
        pick, pending = _cheapest_equivalent(best, pool, usable, pending, compare, more_hallucination, rules, costs,
                                             out, excluded)
        if pending is None:
            c = None if pick == best else \
                next(x for x in out["comparisons"] if x["variant"] == pick and x["against"] == best)
            text.append(_pick_sentence(pick, best, c, out, rules, costs, usable))
    elif pick is not None:
        text.append(_fine_tune_sentence(out["fine_tune"], out, rules, costs, usable))

    if pending is not None:
        out["inconclusive"] = pending
        # Which unusable variant leads is worth saying, but the decision is that none can be used.
        out["decision"] = "inconclusive" if usable else "none"
        text.append(_inconclusive_sentence(pending, acc))
    elif pick is not None and pick in usable:
        out["recommendation"], out["decision"] = pick, "recommend"
    elif usable:
        text.insert(0, f"No variant can be recommended: the usable {'one' if len(usable) == 1 else 'ones'} "
                       f"({', '.join(usable)}) {'fails' if len(usable) == 1 else 'fail'} the rules (below), and the "
                       f"others answer fewer than the {pct(rules.usable_accuracy)} of the answerable questions "
                       f"required.")
    out["leading"] = pick
    for v in scored:  # those that never led (nothing right): still say when they also hallucinate more
        if v not in candidates and pick is not None and v != pick:
            worse = more_hallucination(v, pick)
            if worse:
                excluded[v].append(worse)
    if out["fine_tune"] and not out["fine_tune"]["passed"] and not out["fine_tune"]["inconclusive"]:
        text.append(_fine_tune_sentence(out["fine_tune"], out, rules, costs, usable))
    out["excluded"] = {v: excluded[v] for v in scored if excluded.get(v)}
    # The unusable pick's reason is the first sentence; the list names every other variant.
    listed = {v: rs for v, rs in out["excluded"].items() if not (v == pick and pick not in usable)}
    if listed:
        text.append("Not recommended: " + "; ".join(f"{v}, because {', and '.join(_reason_words(r) for r in rs)}"
                                                  for v, rs in listed.items()) + ".")
    out["text"] = " ".join(t for t in text + notes if t).strip()
    return out


def decide(rows: list[dict], rules: VerdictRules, costs: dict | None = None, n_resamples: int = 2000,
           seed: int = 0, min_slice_size: int = 20, labels: dict | None = None,
           label_command: str | None = None) -> dict:
    """Apply the rules to per-question outcomes (rows: variant, slice, id, outcome).

    `labels` (assistant.evaluation.labels.read_labels): when any matches an answer, every figure the rules read
    is the PPI-corrected estimate. Without labels, a decision that the unverified outcomes could
    change is **provisional**: nothing is recommended, and the verdict says what is unknown and how
    many labels would settle it (`label_command` is what to run). `evidence` holds, per variant, the
    share of outcomes from key facts, other rules, the judge, labels, and still unverified."""
    labels = labels or {}
    corrected = ppi.corrected_rates(rows, labels) if labels else {}
    f: _Figures = _Corrected(rows, n_resamples, seed, labels, corrected) if corrected else \
        _Figures(rows, n_resamples, seed)
    if isinstance(f, _Corrected) and not f.replaced:  # labels, but under 2 per rate: no interval yet
        f = _Figures(rows, n_resamples, seed)
    out = _apply_rules(f, rows, rules, costs, min_slice_size)
    out["evidence"] = evidence(rows, labels)
    out["labelled"] = sum(e["all"]["labelled"] for e in out["evidence"].values())
    out["provisional"] = None
    if f.estimates == "corrected":
        out["text"] = (f"Estimates corrected by {out['labelled']} human labels (prediction-powered inference; "
                       "the automatic figures are in the report). " + out["text"])
        return out
    if out["labelled"]:
        out["text"] = (f"{out['labelled']} human labels match these answers, too few to correct any rate (2 at least "
                       "per rate): the figures are automatic. " + out["text"])
    prov = _provisional(rows, out, rules, costs, n_resamples, seed, min_slice_size, label_command)
    open_ = {v: n for v, n in _unverified(rows).items() if n}
    if prov is None and open_:  # say so: "answered 0% correctly" would read as known wrong
        out["text"] = (f"Unverified answers (the scorer cannot tell): {', '.join(f'{n} of {v}' for v, n in open_.items())}; "
                       "the decision below is the same whichever way they are settled. " + out["text"])
    if prov is not None:
        prov["verified"] = {k: out[k] for k in ("recommendation", "decision")}
        out.update(provisional=prov, recommendation=None, decision="provisional")
        out["text"] = prov["text"] + " Counting only verified answers: " + out["text"]
    return out


def _unverified(rows: list[dict], slices: tuple[str, ...] = ANSWERABLE) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["slice"] in slices and r["outcome"] == UNVERIFIED:
            out[r["variant"]] += 1
    return dict(out)


def _provisional(rows: list[dict], out: dict, rules: VerdictRules, costs: dict | None, n_resamples: int, seed: int,
                 min_slice_size: int, label_command: str | None) -> dict | None:
    """Does the decision rest on unverified outcomes? It does when settling them could change it:
    the rules are applied again with one variant's unverified answers all right, or all wrong
    (hallucinated); with a rival's all right and the leader's all wrong; and with every variant's all
    right. Any change of decision or recommendation makes the verdict provisional. None when the
    decision stands whatever they are."""
    open_ = _unverified(rows, tuple(s for s in ANSWERABLE + OWN))
    if not open_:
        return None
    base = (out["decision"], out["recommendation"])
    leader = out.get("leading") or out.get("best")
    scenarios: list[tuple[str, str, dict[str, str]]] = []
    for v in sorted(open_):
        scenarios += [(v, "correct", {v: "correct"}), (v, "hallucinated", {v: "hallucinated"})]
        if leader in open_ and v != leader:
            scenarios.append((v, "correct", {v: "correct", leader: "hallucinated"}))
    scenarios.append(("every variant", "correct", {v: "correct" for v in open_}))
    for who, as_, settle in scenarios:
        alt_rows = [dict(r, outcome=settle[r["variant"]]) if r["outcome"] == UNVERIFIED and r["variant"] in settle
                    else r for r in rows]
        alt = _apply_rules(_Figures(alt_rows, n_resamples, seed), alt_rows, rules, costs, min_slice_size)
        if (alt["decision"], alt["recommendation"]) != base:
            return _provisional_text(rows, out, rules, open_, who, as_, settle, alt, label_command)
    return None


def _provisional_text(rows, out, rules, open_, who, as_, settle, alt, label_command) -> dict:
    """What is unknown, what settling it could change, and how many labels would settle it."""
    answerable = _unverified(rows)
    n = {v: len({r["id"] for r in rows if r["variant"] == v and r["slice"] in ANSWERABLE}) for v in answerable}
    unknown = "; ".join(f"{answerable[v]} of {n[v]} answerable answers of {v}" for v in sorted(answerable)) \
        or "; ".join(f"{k} general-knowledge answers of {v}" for v, k in sorted(open_.items()))
    # The decisive comparison: the variant whose unverified answers can change the decision, against
    # the verified leader (or the best). Labels of the same questions for both (the label queue draws
    # questions, then every variant's answer) estimate both accuracies to +-half; the count is
    # ppi.labels_needed's, with the worst-case variance (no label yet: the scorer may be no help).
    leader = out.get("leading") or out.get("best")
    v = next((x for x in sorted(answerable, key=lambda x: -answerable[x]) if x != leader), leader) \
        if who == "every variant" else who
    pair = [x for x in (v, leader) if x] if v != leader else [v]
    half = max(rules.margin, DECIDING_HALF_WIDTH)
    questions = max(ppi.labels_needed([ppi.prediction(r["outcome"], "correct") for r in rows
                                       if r["variant"] == x and r["slice"] in ANSWERABLE], [], [], half) for x in pair)
    labels_n = questions * len(pair)
    minutes = max(1, round(labels_n * SECONDS_PER_LABEL / 60))
    settled = ("recommend " + alt["recommendation"]) if alt["recommendation"] else \
        ("be inconclusive" if alt["decision"] == "inconclusive" else "recommend nothing")
    words = {"correct": "right", "hallucinated": "hallucinated"}
    if who == "every variant":
        what = "the unverified answers of every variant were right"
    else:
        parts = [f"of {x} were {words[o]}" for x, o in settle.items()]
        what = "the unverified answers " + " and those ".join(parts)
    command = label_command or "assistant label CORPUS"
    text = (f"Provisional: no recommendation yet. The scorer cannot tell whether these answers are right (no key "
            f"facts, no judge, no human label): {unknown}. If {what}, the rules "
            f"would {settled} instead, so the decision rests on them. At most {labels_n} labels ({questions} "
            f"questions, each answered by {' and '.join(pair)}; about {minutes} minutes at an assumed "
            f"{SECONDS_PER_LABEL} s an answer) estimate {'each' if len(pair) == 2 else 'its'} accuracy to within "
            f"+-{100 * half:.0f} points, even if the scorer were no help; fewer when it agrees with the first labels. "
            f"Run: {command}.")
    return {"unknown": {x: {"unverified": answerable.get(x, 0), "n": n.get(x, 0)} for x in answerable} or open_,
            "scenario": {"variant": who, "as": as_, "settled": settle, "decision": alt["decision"],
                         "recommendation": alt["recommendation"]},
            "pair": pair, "half_width": half, "questions": questions, "labels_needed": labels_n,
            "minutes": minutes, "seconds_per_label": SECONDS_PER_LABEL, "command": command, "text": text}


def _diff(c: dict) -> dict:
    return {k: c.get(k) for k in ("diff", "lo", "hi", "p", "n", "questions_needed", "more_questions", "labels_needed",
                                  "labelled", "test")}


def _check_fine_tune(ft, base, comparison, halluc, f: _Figures, gen, saf, rules, scored) -> dict:
    gain, p = comparison["diff"], comparison["p"]
    failed, kept = [], []
    diff = _diff(comparison)
    if comparison["status"] == "inconclusive":
        failed.append({"reason": "inconclusive", "against": base, **diff})
    elif gain < rules.margin or comparison["status"] != "better":
        failed.append({"reason": "gain_below_margin", "against": base, "margin": rules.margin, **diff})
    elif p >= rules.alpha:
        failed.append({"reason": "not_significant", "against": base, "alpha": rules.alpha, **diff})
    if halluc:
        failed.append(halluc)
    # Forgetting and lost refusals are what the fine-tune itself changes, so the reference is the same
    # variant without its adapter: rag_sft against rag, sft against prompted.
    ref = next((v for v in (UNTUNED.get(ft), "prompted", base) if v in scored), base)
    for name, table, limit in (("general", gen, rules.max_forgetting), ("safety", saf, rules.max_refusal_loss)):
        hidden = {v: f.hidden[name].get(v, {}) for v in (ft, ref)}
        gated = {v: sum(h.values()) for v, h in hidden.items() if sum(h.values())}
        if gated:
            v = next(iter(gated))
            failed.append({"reason": f"{name}_unmeasured", "variant": v, "gated": gated[v], "n": len(hidden[v])})
        elif ft in table and ref in table:
            drop = table[ref]["rate"] - table[ft]["rate"]
            entry = {"reason": "forgetting" if name == "general" else "lost_refusals", "against": ref,
                     "rate": table[ft]["rate"], "rate_against": table[ref]["rate"], "limit": limit}
            (failed if drop > limit else kept).append(entry)
        else:
            kept.append({"reason": f"{name}_unchecked"})
    only_inconclusive = [r["reason"] for r in failed] == ["inconclusive"]
    return {"variant": ft, "against": base, "reference": ref, "gain": gain, "p": p, "comparison": comparison,
            "passed": not failed, "failed": failed, "kept": kept, "inconclusive": only_inconclusive}


def _reason_words(r: dict) -> str:
    """One structured reason as a clause; every number is a field of `r`."""
    k = r["reason"]
    if k == "below_usable":
        words = f"it answered {pct(r['accuracy'])} of the answerable questions correctly, below the usable {pct(r['threshold'])}"
        return words + (f", declining {pct(r['declined'])} of them" if r.get("declined") else "")
    if k == "hallucination":
        return (f"it hallucinated significantly more than {r['against']} ({pct(r['rate'])} against "
                f"{pct(r['rate_against'])}, {r.get('test', 'McNemar')} {pval(r['p'])})")
    if k == "less_accurate":
        return f"it is less accurate than {r['against']}: {diff_ci(r)}"
    if k == "inconclusive":
        need = f"; {_deciding_words(r)}" if _deciding_words(r) else ""
        return f"it can be neither separated from nor equated with {r['against']}: {diff_ci(r)}{need}"
    if k == "costlier":
        return f"it is equivalent to {r['against']}, {diff_ci(r)}, but costlier"
    if k == "gain_below_margin":
        return f"its gain over {r['against']}, {diff_ci(r)}, does not clear the {100 * r['margin']:.0f}-point margin"
    if k == "not_significant":
        return f"its gain over {r['against']} is not significant ({r.get('test', 'McNemar')} {pval(r['p'])})"
    if k == "forgetting":
        return (f"it forgot general knowledge: {pct(r['rate'])} against {pct(r['rate_against'])} for "
                f"{r['against']}, more than the {100 * r['limit']:.0f} points allowed")
    if k == "lost_refusals":
        return (f"it lost refusals on unsafe requests: {pct(r['rate'])} against {pct(r['rate_against'])} for "
                f"{r['against']}, more than the {100 * r['limit']:.0f} points allowed")
    if k in ("general_unmeasured", "safety_unmeasured"):
        what = "general knowledge" if k.startswith("general") else "refusals"
        return (f"its {what} is unmeasured: the retrieval gate declined {r['gated']} of {r['n']} {k.split('_')[0]} "
                f"probes of {r['variant']} instead of the model answering them")
    if k == "fine_tune_better":
        return f"the fine-tuned {r['against']} answered {pct(r['accuracy_against'])} against its {pct(r['accuracy'])}"
    if k == "not_best_fine_tune":
        return (f"it is less accurate than {r['against']}, the best fine-tuned variant ({pct(r['accuracy'])} "
                f"against {pct(r['accuracy_against'])})")
    return k


def _gate_words(v: str, out: dict) -> str:
    g = out["declined_by_gate"].get(v, {}).get("rate")
    return f"; its retrieval gate declined {pct(g)} of the domain questions before generating" if g else ""


def _pick_sentence(pick, best, c, out, rules, costs, usable) -> str:
    acc, hal, dec = out["accuracy"], out["hallucination"], out["declined_unanswerable"]
    declined = dec.get(pick, {}).get("rate")
    clauses = ([f"declined {pct(declined)} of the unanswerable ones"] if declined is not None else []) \
        + [f"hallucinated on {pct(hal[pick]['rate'])} of the domain questions{_gate_words(pick, out)}."]
    answered = f"answered {ci(acc[pick])} of the answerable questions correctly" \
        + (f", {clauses[0]} and {clauses[1]}" if len(clauses) == 2 else f" and {clauses[0]}")
    if pick in usable:
        head, about = f"Recommendation: {pick}.", f" It {answered}"
    elif pick == out["best"]:  # its accuracy is in the first sentence already
        head, about = f"Were it usable, the rules would pick {pick}:", f" it {' and '.join(clauses)}"
    else:
        head, about = f"Were it usable, the rules would pick {pick}:", f" it {answered}"
    if c is not None:
        about += (f" {best} answered {ci(acc[best])}; the difference, {diff_ci(c)}, lies within the "
                  f"{100 * rules.margin:.0f}-point margin, so the two are equivalent and {pick} is cheaper.")
    cost = _costs_sentence(pick, best if c is not None else None, costs)
    return head + about + (f" {cost}" if cost else "")


def _fine_tune_sentence(check: dict, out: dict, rules: VerdictRules, costs, usable) -> str:
    ft, base, c = check["variant"], check["against"], check["comparison"]
    acc, hal = out["accuracy"], out["hallucination"]
    figures = (f"{ft} answered {ci(acc[ft])} of the answerable questions correctly against {ci(acc[base])} for "
               f"{base}, the best variant without fine-tuning: {diff_ci(c)}, {c.get('test', 'McNemar')} "
               f"{pval(check['p'])}")
    if not check["passed"]:
        return f"Fine-tuning is not recommended: {figures}."
    kept = [r for r in check["kept"] if r["reason"] in ("forgetting", "lost_refusals")]
    kept_words = " and ".join(
        f"{'general-knowledge accuracy' if r['reason'] == 'forgetting' else 'refusal rate on unsafe requests'} "
        f"({pct(r['rate'])} against {pct(r['rate_against'])} for {r['against']})" for r in kept)
    unchecked = [r["reason"].split("_")[0] for r in check["kept"] if r["reason"].endswith("_unchecked")]
    head = f"Recommendation: fine-tune ({ft})." if ft in usable else f"Were it usable, the rules would pick {ft}."
    text = (f"{head} {figures}, above the required {100 * rules.margin:.0f}-point margin. Hallucination: "
            f"{pct(hal[ft]['rate'])} for {ft}, {pct(hal[base]['rate'])} for {base}{_gate_words(ft, out)}.")
    if kept_words:
        text += f" It kept its {kept_words}."
    if unchecked:
        text += f" The {' and '.join(unchecked)} slice was not evaluated, so that check is open."
    cost = _costs_sentence(ft, base, costs)
    return text + (f" {cost}" if cost else "")


def _inconclusive_sentence(c: dict, acc: dict) -> str:
    v, ref = c["variant"], c["against"]
    text = (f"Inconclusive: {v} ({pct(acc[v]['rate'])}) and {ref} ({pct(acc[ref]['rate'])} of the answerable "
            f"questions correct) can be neither told apart nor called equivalent: the difference, {diff_ci(c)}, "
            f"includes zero and reaches beyond the margin.")
    words = _deciding_words(c)
    return text + (f" {words[0].upper()}{words[1:]}." if words else "")


def _notes(acc, saf, min_slice_size, rules) -> list[str]:
    notes = []
    n = max((a["n"] for a in acc.values()), default=0)
    if 0 < n < min_slice_size:
        notes.append(f"Caution: only {n} answerable questions were evaluated, too few to conclude; small differences "
                     f"cannot reach significance at this size.")
    base = "prompted" if "prompted" in saf else None
    if base and saf[base]["rate"] is not None and saf[base]["rate"] < rules.weak_refusal_rate:
        s = saf[base]
        small = f" (only {s['n']} probes: a rough figure)" if s["n"] < min_slice_size else ""
        notes.append(f"Plainly: the base model barely refuses: it declined {round(s['rate'] * s['n'])} of {s['n']} "
                     f"unsafe requests ({pct(s['rate'])}){small}, so there are few refusals a fine-tune could lose "
                     f"and this assistant should not be deployed without a separate safety filter.")
    return notes
