"""The verdict in words: the paragraph users read, written from a `Verdict` (verdict.py) alone, so
every number it quotes is one of its fields (the tests check each against metrics.json)."""

from __future__ import annotations

from assistant.evaluation.verdict import (FineTuneCheck, Note, Provisional, Reason, Verdict, ci, diff_ci, pct,
                                          pval)


def as_json(v: Verdict) -> dict:
    """metrics.json's `verdict`: the Verdict's fields with the paragraph (`text`), and the provisional
    verdict's own sentence beside its figures."""
    out = v.to_dict() | {"text": explain(v)}
    if v.provisional is not None:
        out["provisional"]["text"] = _provisional_sentence(v.provisional)
    return out


def explain(v: Verdict) -> str:
    """The verdict paragraph users read, written from the Verdict alone: every number it quotes is
    one of its fields (the tests check each against metrics.json)."""
    text = _body(v)
    if v.estimates == "corrected":
        return (f"Estimates corrected by {v.labelled} human labels (prediction-powered inference; "
                "the automatic figures are in the report). " + text)
    if v.labelled:
        text = (f"{v.labelled} human labels match these answers, too few to correct any rate (2 at least "
                "per rate): the figures are automatic. " + text)
    if v.provisional is not None:
        return _provisional_sentence(v.provisional) + " Counting only verified answers: " + text
    if v.unverified:  # say so: "answered 0% correctly" would read as known wrong
        text = (f"Unverified answers (the scorer cannot tell): {', '.join(f'{n} of {x}' for x, n in v.unverified.items())}; "
                "the decision below is the same whichever way they are settled. " + text)
    return text


def _body(v: Verdict) -> str:
    """The decision, the figures behind it and why every other variant was not recommended, then the notes."""
    notes = [_note_sentence(n) for n in v.notes]
    if v.case == "no_answerable":
        return " ".join(["No answerable domain questions (paraphrase, unseen) were evaluated, so there is nothing "
                         "to recommend from.", *notes]).strip()
    acc, pick = v.accuracy, v.leading
    text: list[str] = []
    if not v.usable:
        b = v.best
        text.append(f"No variant is usable: the most accurate, {b}, answered {ci(acc[b])} of the answerable "
                    f"questions correctly{' (verified)' if v.estimates != 'corrected' else ''}, below the "
                    f"{pct(v.rules.usable_accuracy)} required (verdict.usable_accuracy), so none is recommended.")
    if v.case == "one_variant":
        x = v.best
        text.append(f"Only {x} was evaluated, so nothing was compared: it answered {ci(acc[x])} of the answerable "
                    f"questions correctly, declined {pct(v.declined_unanswerable.get(x, {}).get('rate'))} of "
                    f"the unanswerable ones and hallucinated on {pct(v.hallucination[x]['rate'])} of the domain "
                    f"questions. Build and evaluate the other variants (assistant compare) for a recommendation.")
        return " ".join(text + notes).strip()
    if v.case == "none_correct":
        text.append("No variant's answer to an answerable question was verified correct.")
        return " ".join(text + notes).strip()
    ft = v.fine_tune
    if ft is not None and ft.passed:
        text.append(_fine_tune_sentence(ft, v))
    elif v.tied_with_best and v.inconclusive is None:
        best = v.tied_with_best[0]
        text.append(_pick_sentence(pick, best, None if pick == best else v.comparison(pick, best), v))
    if v.inconclusive is not None:
        text.append(_inconclusive_sentence(v.inconclusive, acc))
    elif v.usable and pick not in v.usable:
        one = len(v.usable) == 1
        text.insert(0, f"No variant can be recommended: the usable {'one' if one else 'ones'} ({', '.join(v.usable)}) "
                       f"{'fails' if one else 'fail'} the rules (below), and the others answer fewer than the "
                       f"{pct(v.rules.usable_accuracy)} of the answerable questions required.")
    if ft is not None and not ft.passed and not ft.inconclusive:
        text.append(_fine_tune_sentence(ft, v))
    # The unusable pick's reason is the first sentence; the list names every other variant.
    listed = {x: rs for x, rs in v.excluded().items() if not (x == pick and pick not in v.usable)}
    if listed:
        text.append("Not recommended: " + "; ".join(f"{x}, because {', and '.join(_reason_words(r) for r in rs)}"
                                                  for x, rs in listed.items()) + ".")
    return " ".join(t for t in text + notes if t).strip()


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


def _reason_words(reason: Reason) -> str:
    """One structured reason as a clause; every number is one of its figures."""
    k, r = reason.kind, reason.to_dict()
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
                f"probes of {r['probed']} instead of the model answering them")
    if k == "fine_tune_better":
        return f"the fine-tuned {r['against']} answered {pct(r['accuracy_against'])} against its {pct(r['accuracy'])}"
    if k == "not_best_fine_tune":
        return (f"it is less accurate than {r['against']}, the best fine-tuned variant ({pct(r['accuracy'])} "
                f"against {pct(r['accuracy_against'])})")
    return k


def _gate_words(x: str, v: Verdict) -> str:
    g = v.declined_by_gate.get(x, {}).get("rate")
    return f"; its retrieval gate declined {pct(g)} of the domain questions before generating" if g else ""


def _pick_sentence(pick: str, best: str, c: dict | None, v: Verdict) -> str:
    acc, hal, dec = v.accuracy, v.hallucination, v.declined_unanswerable
    declined = dec.get(pick, {}).get("rate")
    clauses = ([f"declined {pct(declined)} of the unanswerable ones"] if declined is not None else []) \
        + [f"hallucinated on {pct(hal[pick]['rate'])} of the domain questions{_gate_words(pick, v)}."]
    answered = f"answered {ci(acc[pick])} of the answerable questions correctly" \
        + (f", {clauses[0]} and {clauses[1]}" if len(clauses) == 2 else f" and {clauses[0]}")
    if pick in v.usable:
        head, about = f"Recommendation: {pick}.", f" It {answered}"
    elif pick == v.best:  # its accuracy is in the first sentence already
        head, about = f"Were it usable, the rules would pick {pick}:", f" it {' and '.join(clauses)}"
    else:
        head, about = f"Were it usable, the rules would pick {pick}:", f" it {answered}"
    if c is not None:
        about += (f" {best} answered {ci(acc[best])}; the difference, {diff_ci(c)}, lies within the "
                  f"{100 * v.rules.margin:.0f}-point margin, so the two are equivalent and {pick} is cheaper.")
    cost = _costs_sentence(pick, best if c is not None else None, v.costs)
    return head + about + (f" {cost}" if cost else "")


def _fine_tune_sentence(check: FineTuneCheck, v: Verdict) -> str:
    ft, base, c = check.variant, check.against, check.comparison
    acc, hal = v.accuracy, v.hallucination
    figures = (f"{ft} answered {ci(acc[ft])} of the answerable questions correctly against {ci(acc[base])} for "
               f"{base}, the best variant without fine-tuning: {diff_ci(c)}, {c.get('test', 'McNemar')} "
               f"{pval(c['p'])}")
    if not check.passed:
        return f"Fine-tuning is not recommended: {figures}."
    kept = [r.to_dict() for r in check.kept if r.kind in ("forgetting", "lost_refusals")]
    kept_words = " and ".join(
        f"{'general-knowledge accuracy' if r['reason'] == 'forgetting' else 'refusal rate on unsafe requests'} "
        f"({pct(r['rate'])} against {pct(r['rate_against'])} for {r['against']})" for r in kept)
    unchecked = [r.kind.split("_")[0] for r in check.kept if r.kind.endswith("_unchecked")]
    head = f"Recommendation: fine-tune ({ft})." if ft in v.usable else f"Were it usable, the rules would pick {ft}."
    text = (f"{head} {figures}, above the required {100 * v.rules.margin:.0f}-point margin. Hallucination: "
            f"{pct(hal[ft]['rate'])} for {ft}, {pct(hal[base]['rate'])} for {base}{_gate_words(ft, v)}.")
    if kept_words:
        text += f" It kept its {kept_words}."
    if unchecked:
        text += f" The {' and '.join(unchecked)} slice was not evaluated, so that check is open."
    cost = _costs_sentence(ft, base, v.costs)
    return text + (f" {cost}" if cost else "")


def _inconclusive_sentence(c: dict, acc: dict) -> str:
    v, ref = c["variant"], c["against"]
    text = (f"Inconclusive: {v} ({pct(acc[v]['rate'])}) and {ref} ({pct(acc[ref]['rate'])} of the answerable "
            f"questions correct) can be neither told apart nor called equivalent: the difference, {diff_ci(c)}, "
            f"includes zero and reaches beyond the margin.")
    words = _deciding_words(c)
    return text + (f" {words[0].upper()}{words[1:]}." if words else "")


def _note_sentence(n: Note) -> str:
    f = n.figures
    if n.kind == "few_questions":
        return (f"Caution: only {f['n']} answerable questions were evaluated, too few to conclude; small differences "
                f"cannot reach significance at this size.")
    small = f" (only {f['n']} probes: a rough figure)" if f["small"] else ""
    return (f"Plainly: the base model barely refuses: it declined {f['refused']} of {f['n']} unsafe requests "
            f"({pct(f['rate'])}){small}, so there are few refusals a fine-tune could lose and this assistant should "
            f"not be deployed without a separate safety filter.")


def _provisional_sentence(p: Provisional) -> str:
    """What is unknown, what settling it would change, and the labels (and command) that would settle it."""
    unknown = "; ".join(f"{u['unverified']} of {u['n']} answerable answers of {x}" if isinstance(u, dict)
                        else f"{u} general-knowledge answers of {x}" for x, u in sorted(p.unknown.items()))
    s = p.scenario
    settled = ("recommend " + s["recommendation"]) if s["recommendation"] else \
        ("be inconclusive" if s["decision"] == "inconclusive" else "recommend nothing")
    words = {"correct": "right", "hallucinated": "hallucinated"}
    if s["variant"] == "every variant":
        what = "the unverified answers of every variant were right"
    else:
        what = "the unverified answers " + " and those ".join(f"of {x} were {words[o]}" for x, o in s["settled"].items())
    return (f"Provisional: no recommendation yet. The scorer cannot tell whether these answers are right (no key "
            f"facts, no judge, no human label): {unknown}. If {what}, the rules "
            f"would {settled} instead, so the decision rests on them. At most {p.labels_needed} labels ({p.questions} "
            f"questions, each answered by {' and '.join(p.pair)}; about {p.minutes} minutes at an assumed "
            f"{p.seconds_per_label} s an answer) estimate {'each' if len(p.pair) == 2 else 'its'} accuracy to within "
            f"+-{100 * p.half_width:.0f} points, even if the scorer were no help; fewer when it agrees with the first "
            f"labels. Run: {p.command}.")
