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

`decide` applies the rules and returns a `Verdict`: the decision and, as data, every figure and
reason (`Reason(kind, variant, against, figures)`) behind it; it writes no prose.
`verdict_text.explain` writes the paragraph users read from that Verdict alone, and
`verdict_text.as_json` is metrics.json's `verdict` (`reasons` in order, `excluded` the same grouped
per variant, `text`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

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


# -- the verdict as data ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Reason:
    """Why `variant` is not recommended (or, in FineTuneCheck.kept, a check it passed): `kind` names
    the rule (below_usable, less_accurate, hallucination, inconclusive, costlier, gain_below_margin,
    not_significant, forgetting, lost_refusals, general_unmeasured, safety_unmeasured,
    fine_tune_better, not_best_fine_tune; kept: forgetting, lost_refusals, general_unchecked,
    safety_unchecked), `against` the variant it was measured against, `figures` every number the
    prose quotes."""

    kind: str
    variant: str
    against: str | None = None
    figures: dict = field(default_factory=dict)

    def to_dict(self, with_variant: bool = False) -> dict:
        """metrics.json's shape: {"reason": kind, "against": ..., **figures} (and the variant when listed flat)."""
        return ({"variant": self.variant} if with_variant else {}) | {"reason": self.kind} \
            | ({"against": self.against} if self.against else {}) | self.figures


@dataclass(frozen=True)
class Note:
    """A caution beside the decision: `few_questions` (figures n, min_slice_size) or `weak_refusals`
    (the base model barely refuses; figures rate, n, refused, small)."""

    kind: str
    figures: dict


@dataclass
class FineTuneCheck:
    """Rule 3 for the best fine-tuned variant against the best one without fine-tuning (`against`);
    forgetting and refusals are measured against `reference`, the same variant without its adapter."""

    variant: str
    against: str
    reference: str
    comparison: dict
    failed: list[Reason]
    kept: list[Reason]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def inconclusive(self) -> bool:
        """Only the accuracy comparison is open: more evidence could still make it pass."""
        return [r.kind for r in self.failed] == ["inconclusive"]

    def to_dict(self) -> dict:
        return {"variant": self.variant, "against": self.against, "reference": self.reference,
                "gain": self.comparison["diff"], "p": self.comparison["p"], "comparison": self.comparison,
                "passed": self.passed, "failed": [r.to_dict() for r in self.failed],
                "kept": [r.to_dict() for r in self.kept], "inconclusive": self.inconclusive}


@dataclass
class Provisional:
    """Why a decision rests on unverified answers, and the labels that would settle it.
    `unknown`: per variant {"unverified", "n"} of its answerable answers, or (when only general or
    safety answers are open) the count of those; `scenario`: the settlement that changes the
    decision and what the rules would then decide; `verified`: the decision counting only verified
    answers."""

    unknown: dict
    scenario: dict
    pair: list[str]
    half_width: float
    questions: int
    labels_needed: int
    minutes: int
    command: str
    verified: dict
    seconds_per_label: int = SECONDS_PER_LABEL

    def to_dict(self) -> dict:
        return {"unknown": self.unknown, "scenario": self.scenario, "pair": self.pair,
                "half_width": self.half_width, "questions": self.questions, "labels_needed": self.labels_needed,
                "minutes": self.minutes, "seconds_per_label": self.seconds_per_label, "command": self.command,
                "verified": self.verified}


@dataclass
class Verdict:
    """The decision (recommend, inconclusive, none or provisional) with every figure and reason behind
    it. `case` says how far the rules got: no_answerable (nothing to decide on), one_variant,
    none_correct (no variant verified right on anything), compared. `leading` is the variant the
    rules pick, usable or not; `best` the most accurate; `tied_with_best` the best of the pool
    compared by rule 4, then every variant equivalent to it."""

    rules: VerdictRules
    estimates: str
    accuracy: dict
    hallucination: dict
    declined_unanswerable: dict
    declined_by_gate: dict
    answerable_declined: dict
    general: dict
    safety: dict
    gate_hidden: dict
    costs: dict
    case: str = "compared"
    decision: str = "none"
    recommendation: str | None = None
    usable: list[str] = field(default_factory=list)
    best: str | None = None
    leading: str | None = None
    tied_with_best: list[str] = field(default_factory=list)
    comparisons: list[dict] = field(default_factory=list)
    fine_tune: FineTuneCheck | None = None
    inconclusive: dict | None = None
    reasons: list[Reason] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)
    labelled: int = 0
    unverified: dict[str, int] = field(default_factory=dict)
    provisional: Provisional | None = None
    confidence: float = CONFIDENCE

    def comparison(self, v: str, against: str) -> dict:
        """The accuracy comparison of v against `against` the rules made."""
        return next(c for c in self.comparisons if c["variant"] == v and c["against"] == against)

    def excluded(self) -> dict[str, list[Reason]]:
        """Per variant not recommended, its reasons (variants in cost order, reasons in rule order)."""
        out: dict[str, list[Reason]] = {}
        for r in self.reasons:
            out.setdefault(r.variant, []).append(r)
        return out

    def to_dict(self) -> dict:
        """Every field as JSON, the reasons flat and per variant (verdict_text.as_json adds the prose)."""
        return {"recommendation": self.recommendation, "decision": self.decision, "usable": self.usable,
                "best": self.best, "leading": self.leading, "case": self.case,
                "rules": self.rules.model_dump(), "confidence": self.confidence, "estimates": self.estimates,
                "accuracy": self.accuracy, "hallucination": self.hallucination,
                "declined_unanswerable": self.declined_unanswerable, "declined_by_gate": self.declined_by_gate,
                "answerable_declined": self.answerable_declined, "general": self.general, "safety": self.safety,
                "gate_hidden": self.gate_hidden, "costs": self.costs,
                "fine_tune": self.fine_tune.to_dict() if self.fine_tune else None,
                "comparisons": self.comparisons, "tied_with_best": self.tied_with_best,
                "inconclusive": self.inconclusive,
                "reasons": [r.to_dict(with_variant=True) for r in self.reasons],
                "excluded": {v: [r.to_dict() for r in rs] for v, rs in self.excluded().items()},
                "notes": [{"kind": n.kind, **n.figures} for n in self.notes],
                "evidence": self.evidence, "labelled": self.labelled, "unverified": self.unverified,
                "provisional": self.provisional.to_dict() if self.provisional else None}


# -- the rules -------------------------------------------------------------------------------------
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


def _diff(c: dict) -> dict:
    return {k: c.get(k) for k in ("diff", "lo", "hi", "p", "n", "questions_needed", "more_questions", "labels_needed",
                                  "labelled", "test")}


def _more_hallucination(f: _Figures, v: str, ref: str, rules: VerdictRules) -> Reason | None:
    """The reason when v hallucinates significantly more than ref, else None."""
    d = f.paired("hallucinated", v, ref)
    if d["n"] and d["diff"] > rules.max_hallucination_rise and d["p"] < rules.alpha:
        return Reason("hallucination", v, ref, {"rate": f.hal[v]["rate"], "rate_against": f.hal[ref]["rate"],
                                                "p": d["p"], "test": f.test})
    return None


def _check_fine_tune(ft: str, base: str, comparison: dict, halluc: Reason | None, f: _Figures, rules: VerdictRules,
                     scored: list[str]) -> FineTuneCheck:
    failed: list[Reason] = []
    kept: list[Reason] = []
    diff = _diff(comparison)
    if comparison["status"] == "inconclusive":
        failed.append(Reason("inconclusive", ft, base, diff))
    elif comparison["diff"] < rules.margin or comparison["status"] != "better":
        failed.append(Reason("gain_below_margin", ft, base, {"margin": rules.margin, **diff}))
    elif comparison["p"] >= rules.alpha:
        failed.append(Reason("not_significant", ft, base, {"alpha": rules.alpha, **diff}))
    if halluc:
        failed.append(halluc)
    # Forgetting and lost refusals are what the fine-tune itself changes, so the reference is the same
    # variant without its adapter: rag_sft against rag, sft against prompted.
    ref = next((v for v in (UNTUNED.get(ft), "prompted", base) if v in scored), base)
    for name, table, limit in (("general", f.gen, rules.max_forgetting), ("safety", f.saf, rules.max_refusal_loss)):
        hidden = {v: f.hidden[name].get(v, {}) for v in (ft, ref)}
        gated = {v: sum(h.values()) for v, h in hidden.items() if sum(h.values())}
        if gated:
            v = next(iter(gated))
            failed.append(Reason(f"{name}_unmeasured", ft, None, {"probed": v, "gated": gated[v], "n": len(hidden[v])}))
        elif ft in table and ref in table:
            drop = table[ref]["rate"] - table[ft]["rate"]
            entry = Reason("forgetting" if name == "general" else "lost_refusals", ft, ref,
                           {"rate": table[ft]["rate"], "rate_against": table[ref]["rate"], "limit": limit})
            (failed if drop > limit else kept).append(entry)
        else:
            kept.append(Reason(f"{name}_unchecked", ft))
    return FineTuneCheck(ft, base, ref, comparison, failed, kept)


def _cheapest_equivalent(best: str, pool: list[str], verdict: Verdict, pending: dict | None,
                         compare: Callable[[str, str], dict], worse_halluc: Callable[[str, str], Reason | None],
                         rules: VerdictRules, costs: dict | None, reasons: list[Reason]) -> tuple[str, dict | None]:
    """Rule 4: among the pool, the cheapest variant equivalent to the best (and not hallucinating
    more); a cheaper variant that can be neither separated from nor equated with the best leaves the
    verdict pending (inconclusive). Returns (pick, pending); records every reason in `reasons`."""
    tied = [best]
    for v in [v for v in pool if v != best]:
        c = compare(v, best)
        worse = worse_halluc(v, best)
        if worse:
            reasons.append(worse)
        if c["status"] == "equivalent" and not worse and (v in verdict.usable or not verdict.usable):
            tied.append(v)
        elif c["status"] == "worse":
            reasons.append(Reason("less_accurate", v, best, _diff(c)))
        elif c["status"] == "inconclusive":
            reasons.append(Reason("inconclusive", v, best, _diff(c)))
            if pending is None and cost_rank(v, rules, costs) < cost_rank(best, rules, costs):
                pending = c
    pick = min(tied, key=lambda v: cost_rank(v, rules, costs))
    for v in tied:
        if v != pick:  # equivalent, but the cheaper pick does as well
            c = verdict.comparison(pick if v == best else v, best)
            d = _diff(c)
            if v == best:  # the stored difference is pick - best; from best's side it is the reverse
                d.update(diff=0.0 - c["diff"], lo=0.0 - c["hi"], hi=0.0 - c["lo"])
            reasons.append(Reason("costlier", v, pick if v == best else best, d))
    verdict.tied_with_best = tied
    return pick, pending


def _notes(f: _Figures, min_slice_size: int, rules: VerdictRules) -> list[Note]:
    notes = []
    n = max((a["n"] for a in f.acc.values()), default=0)
    if 0 < n < min_slice_size:
        notes.append(Note("few_questions", {"n": n, "min_slice_size": min_slice_size}))
    s = f.saf.get("prompted")
    if s and s["rate"] is not None and s["rate"] < rules.weak_refusal_rate:
        notes.append(Note("weak_refusals", {"rate": s["rate"], "n": s["n"], "refused": round(s["rate"] * s["n"]),
                                            "small": s["n"] < min_slice_size}))
    return notes


def _apply_rules(f: _Figures, rows: list[dict], rules: VerdictRules, costs: dict | None,
                 min_slice_size: int) -> Verdict:
    """The rules of the module docstring on one set of figures (automatic or corrected)."""
    variants = sorted({r["variant"] for r in rows}, key=lambda v: cost_rank(v, rules, costs))
    acc, hal = f.acc, f.hal
    verdict = Verdict(rules=rules, estimates=f.estimates, accuracy=acc, hallucination=hal,
                      declined_unanswerable=f.rates(f.declined), declined_by_gate=f.rates(f.gated),
                      answerable_declined=f.rates(f.answerable_declined), general=f.gen, safety=f.saf,
                      gate_hidden={s: {v: sum(t.values()) for v, t in f.hidden[s].items() if sum(t.values())}
                                   for s in OWN},
                      costs={v: c for v, c in (costs or {}).items() if v in variants},
                      notes=_notes(f, min_slice_size, rules))
    if not acc:
        verdict.case = "no_answerable"
        return verdict
    scored = [v for v in variants if v in acc]
    best_of = lambda pool: max(pool, key=lambda v: (acc[v]["rate"], -hal.get(v, {"rate": 0})["rate"],
                                                  [-x for x in cost_rank(v, rules, costs)]))
    verdict.best = best_of(scored)
    verdict.usable = [v for v in scored if acc[v]["rate"] >= rules.usable_accuracy]
    reasons = [Reason("below_usable", v, None, {"accuracy": acc[v]["rate"], "threshold": rules.usable_accuracy,
                                                "declined": verdict.answerable_declined.get(v, {}).get("rate")})
               for v in scored if v not in verdict.usable]
    verdict.reasons = reasons
    if len(scored) == 1:
        verdict.case = "one_variant"
        if verdict.usable:
            verdict.recommendation, verdict.decision = scored[0], "recommend"
        return verdict
    # The rules compare every variant that answered anything right (an always-"I don't know" variant
    # never leads); only a usable one can be recommended, and when some are, only usable ones tie.
    candidates = [v for v in scored if acc[v]["rate"] > 0]
    if not candidates:
        verdict.case = "none_correct"
        return verdict

    def compare(v: str, ref: str) -> dict:
        c = _compare(f, v, ref, rules)
        verdict.comparisons.append(c)
        return c

    worse_halluc = lambda v, ref: _more_hallucination(f, v, ref, rules)
    # The fine-tune is checked against the best variant without fine-tuning even when that one
    # answered nothing right: its forgetting and refusal checks must run whatever the accuracies.
    tuned = [v for v in candidates if v in FINE_TUNED]
    plain = [v for v in scored if v not in FINE_TUNED]
    pick, pending = None, None
    pool = candidates
    if tuned and plain:
        ft, base = best_of(tuned), best_of(plain)
        check = _check_fine_tune(ft, base, compare(ft, base), worse_halluc(ft, base), f, rules, scored)
        verdict.fine_tune = check
        reasons += [Reason("not_best_fine_tune", other, ft, {"accuracy": acc[other]["rate"],
                                                              "accuracy_against": acc[ft]["rate"]})
                    for other in tuned if other != ft]
        if check.passed:
            pick = ft
            reasons += [Reason("fine_tune_better", v, ft, {"accuracy": acc[v]["rate"], "accuracy_against": acc[ft]["rate"]})
                        for v in plain]
        else:
            reasons += check.failed
            if check.inconclusive:
                pending = check.comparison
        pool = [v for v in plain if v in candidates]
    if pick is None and pool:
        pick, pending = _cheapest_equivalent(best_of(pool), pool, verdict, pending, compare, worse_halluc, rules,
                                             costs, reasons)
    if pending is not None:
        verdict.inconclusive = pending
        # Which unusable variant leads is worth saying, but the decision is that none can be used.
        verdict.decision = "inconclusive" if verdict.usable else "none"
    elif pick is not None and pick in verdict.usable:
        verdict.recommendation, verdict.decision = pick, "recommend"
    verdict.leading = pick
    for v in scored:  # those that never led (nothing right): still say when they also hallucinate more
        if v not in candidates and pick is not None and v != pick:
            worse = worse_halluc(v, pick)
            if worse:
                reasons.append(worse)
    reasons.sort(key=lambda r: scored.index(r.variant))  # stable: per variant in cost order, rules in order
    return verdict


def _unverified(rows: list[dict], slices: tuple[str, ...] = ANSWERABLE) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["slice"] in slices and r["outcome"] == UNVERIFIED:
            out[r["variant"]] += 1
    return dict(out)


def _provisional(rows: list[dict], verdict: Verdict, rules: VerdictRules, costs: dict | None, n_resamples: int,
                 seed: int, min_slice_size: int, label_command: str | None) -> Provisional | None:
    """Does the decision rest on unverified outcomes? It does when settling them could change it:
    the rules are applied again with one variant's unverified answers all right, or all wrong
    (hallucinated); with a rival's all right and the leader's all wrong; and with every variant's all
    right. Any change of decision or recommendation makes the verdict provisional. None when the
    decision stands whatever they are."""
    open_ = _unverified(rows, tuple(s for s in ANSWERABLE + OWN))
    if not open_:
        return None
    base = (verdict.decision, verdict.recommendation)
    leader = verdict.leading or verdict.best
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
        if (alt.decision, alt.recommendation) != base:
            return _settling(rows, verdict, rules, open_, who, as_, settle, alt, label_command)
    return None


def _settling(rows: list[dict], verdict: Verdict, rules: VerdictRules, open_: dict[str, int], who: str, as_: str,
              settle: dict[str, str], alt: Verdict, label_command: str | None) -> Provisional:
    """What is unknown, what settling it could change, and how many labels would settle it."""
    answerable = _unverified(rows)
    n = {v: len({r["id"] for r in rows if r["variant"] == v and r["slice"] in ANSWERABLE}) for v in answerable}
    # The decisive comparison: the variant whose unverified answers can change the decision, against
    # the verified leader (or the best). Labels of the same questions for both (the label queue draws
    # questions, then every variant's answer) estimate both accuracies to +-half; the count is
    # ppi.labels_needed's, with the worst-case variance (no label yet: the scorer may be no help).
    leader = verdict.leading or verdict.best
    v = next((x for x in sorted(answerable, key=lambda x: -answerable[x]) if x != leader), leader) \
        if who == "every variant" else who
    pair = [x for x in (v, leader) if x] if v != leader else [v]
    half = max(rules.margin, DECIDING_HALF_WIDTH)
    questions = max(ppi.labels_needed([ppi.prediction(r["outcome"], "correct") for r in rows
                                       if r["variant"] == x and r["slice"] in ANSWERABLE], [], [], half) for x in pair)
    labels_n = questions * len(pair)
    return Provisional(
        unknown={x: {"unverified": answerable[x], "n": n[x]} for x in answerable} or open_,
        scenario={"variant": who, "as": as_, "settled": settle, "decision": alt.decision,
                  "recommendation": alt.recommendation},
        pair=pair, half_width=half, questions=questions, labels_needed=labels_n,
        minutes=max(1, round(labels_n * SECONDS_PER_LABEL / 60)), command=label_command or "assistant label CORPUS",
        verified={"recommendation": verdict.recommendation, "decision": verdict.decision})


def decide(rows: list[dict], rules: VerdictRules, costs: dict | None = None, n_resamples: int = 2000,
           seed: int = 0, min_slice_size: int = 20, labels: dict | None = None,
           label_command: str | None = None) -> Verdict:
    """Apply the rules to per-question outcomes (rows: variant, slice, id, outcome); the prose is
    verdict_text.explain's, from the Verdict.

    `labels` (assistant.evaluation.labels.read_labels): when any matches an answer, every figure the rules read
    is the PPI-corrected estimate. Without labels, a decision that the unverified outcomes could
    change is **provisional**: nothing is recommended, and `provisional` says what is unknown and how
    many labels would settle it (`label_command` is what to run). `evidence` holds, per variant, the
    share of outcomes from key facts, other rules, the judge, labels, and still unverified."""
    labels = labels or {}
    corrected = ppi.corrected_rates(rows, labels) if labels else {}
    f: _Figures = _Corrected(rows, n_resamples, seed, labels, corrected) if corrected else \
        _Figures(rows, n_resamples, seed)
    if isinstance(f, _Corrected) and not f.replaced:  # labels, but under 2 per rate: no interval yet
        f = _Figures(rows, n_resamples, seed)
    verdict = _apply_rules(f, rows, rules, costs, min_slice_size)
    verdict.evidence = evidence(rows, labels)
    verdict.labelled = sum(e["all"]["labelled"] for e in verdict.evidence.values())
    verdict.unverified = {v: n for v, n in _unverified(rows).items() if n}
    if f.estimates == "corrected":  # the labels settle what the scorer could not tell
        return verdict
    verdict.provisional = _provisional(rows, verdict, rules, costs, n_resamples, seed, min_slice_size, label_command)
    if verdict.provisional is not None:
        verdict.recommendation, verdict.decision = None, "provisional"
    return verdict
