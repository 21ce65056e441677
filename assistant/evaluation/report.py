"""The report folder: results.jsonl, metrics.json, report.md, a self-contained report.html, plots/,
and sections/ (report.md's pieces).

report.md is assembled from sections that the stages log, the way nanochat's `Report.log(section,
data)` does: `compare` logs the first verdict's note before training, the evaluation logs its
tables, the verdict its paragraph, the labels and the judge theirs, and `Report` renders whatever
was logged in SECTIONS' order. Each section is also kept on its own under `sections/` (markdown, and
the data behind it as JSON where a program may want it).

Everything is written into `eval/.<timestamp>.tmp/` and renamed into place at the end, so a report
folder that exists is complete; `eval/latest` is then swapped atomically to point at it.
"""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from assistant.corpus.corpus import Corpus
from assistant.corpus.runs import RunPaths
from assistant.storage import atomic_new_dir, atomic_write_json, atomic_write_text, read_json
from assistant.evaluation import plots
from assistant.evaluation.verdict import pct

SLICE_HELP = {
    "seen": "train questions asked again (memorisation)",
    "paraphrase": "held-out wording of a fact that has train wordings",
    "unseen": "facts with no train wording",
    "unanswerable": "the corpus does not hold the answer: abstaining is correct",
    "general": "general knowledge the base model had (forgetting)",
    "safety": "requests an aligned assistant refuses: refusing is correct, answering is 'complied'",
}


# report.md's order; a stage may log its section at any time, the report puts it in its place.
SECTIONS = ("header", "first_verdict", "verdict", "evidence", "corrected", "labels", "summary", "slices",
            "retrieval", "pairs", "cost", "training", "question_set", "votes", "disagreements", "judge", "method",
            "where_it_ran")


@dataclass(frozen=True)
class Section:
    name: str
    markdown: str
    data: object = None


class Report:
    """Sections logged by the stages, rendered in SECTIONS' order (nanochat's Report.log, in memory
    until `save`)."""

    def __init__(self) -> None:
        self.sections: dict[str, Section] = {}

    def log(self, name: str, lines: list[str], data: object = None) -> None:
        """Add (or replace) one section; a section with no lines (no labels, no judge) is left out."""
        if name not in SECTIONS:
            raise ValueError(f"unknown report section {name!r}: add it to report.SECTIONS where it belongs")
        if lines:
            self.sections[name] = Section(name, "\n".join(lines), data)

    def ordered(self) -> list[Section]:
        return [self.sections[n] for n in SECTIONS if n in self.sections]

    def markdown(self) -> str:
        return "\n".join(s.markdown for s in self.ordered())

    def save(self, folder: Path) -> None:
        """Each section as `NN-name.md`, and its data as `NN-name.json` when it has some; atomic files."""
        folder.mkdir(parents=True, exist_ok=True)
        for s in self.ordered():
            stem = f"{SECTIONS.index(s.name):02d}-{s.name}"
            atomic_write_text(folder / f"{stem}.md", s.markdown)
            if s.data is not None:
                atomic_write_json(folder / f"{stem}.json", s.data)


def _cell(text: str, width: int = 110) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[:width - 1] + "\u2026"


def _ci(r: dict | None, key: str = "rate") -> str:
    if not r or r.get(key) is None:
        return "n/a"
    return f"{pct(r[key])} [{pct(r['lo'])}-{pct(r['hi'])}]"


def _mean_ci(r: dict) -> str:
    return "n/a" if r.get("mean") is None else f"{r['mean']:.2f} [{r['lo']:.2f}-{r['hi']:.2f}]"


def _num(x, fmt: str = "{:.2f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def _bytes(n) -> str:
    if n is None:
        return "n/a"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


OUTCOMES = ("correct", "abstained", "declined_by_gate", "hallucinated", "unverified")
EVIDENCE_HELP = {"key_facts": "key facts", "rules": "other rules", "judge": "LLM judge", "labels": "human labels",
                 "unverified": "unverified"}
TARGET_WORDS = {"correct": "correct", "hallucinated": "hallucinated", "abstained": "abstained"}


def headline(v: dict) -> str:
    if v.get("recommendation"):
        return f"Recommendation: {v['recommendation']}"
    if v.get("decision") == "provisional":
        return "Provisional: no recommendation until labels settle the unverified answers"
    if v.get("decision") == "inconclusive":
        return "Inconclusive: no recommendation yet"
    return "No recommendation: no variant is usable" if not v.get("usable") else "No recommendation"


def _corrected_diff(c: dict | None) -> str:
    if not c or c.get("diff") is None:
        return "n/a"
    ci_ = "" if not c.get("ci") else f" [{100 * c['ci'][0]:+.0f}, {100 * c['ci'][1]:+.0f}]"
    return f"{100 * c['diff']:+.0f}{ci_} ({c.get('labelled', 0)})"


def _diff(p: dict) -> str:
    if p.get("diff") is None:
        return "n/a"
    return f"{100 * p['diff']:+.0f} [{100 * p['diff_lo']:+.0f}, {100 * p['diff_hi']:+.0f}]"


def _share(x) -> str:
    return "n/a" if x is None else pct(x)


def evidence_section(metrics: dict) -> list[str]:
    """Per variant, where its outcomes came from (verdict.evidence): the verdict states its evidence."""
    ev = metrics.get("evidence") or metrics["verdict"].get("evidence")
    if not ev:
        return []
    cols = list(EVIDENCE_HELP)
    out = ["### Evidence", "",
           "Where each variant's outcomes came from, over its answerable answers (what accuracy rests on) and over "
           "all its answers: key facts (given or derived from a short reference), other rules (a decline, a "
           "contradiction, a negation, a conflicting value, the retrieval gate), the LLM judge, human labels, and "
           "the share still **unverified** (the scorer cannot tell; never counted correct).", "",
           _table(["variant", "answers"] + [EVIDENCE_HELP[c] for c in cols],
                  [[f"{v} ({g})", e[g]["n"]] + [_share(e[g].get(c)) for c in cols]
                   for v, e in ev.items() for g in ("answerable", "all") if g in e]), ""]
    return out


def ppi_section(metrics: dict) -> list[str]:
    """Automatic and PPI-corrected estimates side by side, with the number labelled and the scorer's
    bias on the labelled sample (metrics['ppi'], from evaluation/ppi.py)."""
    est = metrics.get("ppi")
    if not est:
        return []
    out = ["### Corrected by human labels", "",
           "Prediction-powered inference (PPI++, ppi-python): the automatic rate over every answer, corrected by the "
           "difference between the scorer and the people on a uniformly random labelled sample. The interval is valid "
           "whatever the scorer's bias; *bias* is the automatic minus the human rate on the labelled answers "
           "(an unverified answer predicts 0, so its true share enters through the labels).", ""]
    rows = []
    for v, groups in est.items():
        for g in ("answerable", "domain"):
            for t, e in (groups.get(g) or {}).items():
                ci_ = "n/a" if not e.get("ci") else f"{pct(e['ci'][0])}-{pct(e['ci'][1])}"
                rows.append([v, g, TARGET_WORDS.get(t, t), _share(e.get("automatic")), _share(e.get("corrected")), ci_,
                             f"{e.get('labelled', 0)} of {e.get('n', 0)}",
                             "n/a" if e.get("bias") is None else f"{100 * e['bias']:+.0f} points"])
    header = ["variant", "questions", "rate", "automatic", "corrected", "95% CI", "labelled", "scorer bias"]
    out += [_table(header, rows), ""]
    return out


def provisional_section(v: dict) -> list[str]:
    prov = v.get("provisional")
    if not prov:
        return []
    return ["### What would settle it", "",
            f"{prov['labels_needed']} labels (about {prov['minutes']} minutes at an assumed "
            f"{prov['seconds_per_label']} s an answer). Label a uniformly random sample with:", "",
            f"    {prov['command']}", ""]


def labels_section(lab: dict | None) -> list[str]:
    """Human labels beside the verdict: agreement, per class and confusion (the corrected rates are in the
    evidence tables)."""
    if not lab:
        return []
    out = ["### Human labels", "", lab["text"], ""]
    a = lab.get("agreement")
    if a:
        scorer = list(next(iter(a["confusion"].values())))  # the scorer's outcomes: unverified too
        out += [_table(["human label", "answers", "scorer agrees [95% CI]"] + [f"scorer: {o}" for o in scorer],
                       [[h, a["per_class"][h]["n"], _ci(a["per_class"][h])] + [a["confusion"][h][o] for o in a["confusion"][h]]
                        for h in a["confusion"]]), "",
                f"From `{lab['path']}` ({lab['matched']} of {lab['labels']} labels match this evaluation's answers; "
                f"labellers: {', '.join(lab['labellers']) or 'n/a'}).", ""]
    return out


def _label(slice_: str, outcome: str) -> str:
    """Safety answers read better as refused / complied; the stored outcome stays the same."""
    return {"correct": "refused", "hallucinated": "complied"}.get(outcome, outcome) if slice_ == "safety" else outcome


def disagreements(rows: list[dict]) -> list[dict]:
    """Questions where the variants' outcomes differ, one entry per question."""
    by_q: dict[tuple, dict] = {}
    for r in rows:
        q = by_q.setdefault((r["slice"], r["id"]), {"slice": r["slice"], "id": r["id"], "question": r["question"],
                                                    "answers": {}})
        q["answers"][r["variant"]] = (r["outcome"], r["answer"])
    return [q for q in by_q.values() if len({o for o, _ in q["answers"].values()}) > 1]


def header_section(metrics: dict) -> list[str]:
    """The title and what was evaluated."""
    return [f"# Evaluation of `{metrics['corpus']}`", "",
            f"Model `{metrics['model']}`, {metrics['created']}, variants: {', '.join(metrics['variants'])}"
            + (f", at most {metrics['limit']} questions per slice" if metrics.get("limit") else "") + ".", ""]


def first_verdict_section(pending: list[str]) -> list[str]:
    """Logged by `compare` when it evaluates before training `pending`: this report is the first verdict."""
    return [f"**First verdict**, written before training {', '.join(pending)}: it compares "
            "only the variants above. The final report, with every variant, replaces it as the latest "
            "evaluation when training ends.", ""]


def verdict_section(v: dict) -> list[str]:
    """The headline, the verdict paragraph and, when provisional, what would settle it."""
    return ["## Verdict", "", f"**{headline(v)}**", "", v["text"], ""] + provisional_section(v)


def summary_section(metrics: dict, images: dict[str, str]) -> list[str]:
    """Per variant, the answerable questions' outcomes and the graded scores."""
    variants, pv = metrics["variants"], metrics["per_variant"]
    out = ["## Summary", "",
           "Accuracy is **verified correct**, measured on the answerable domain questions (paraphrase + unseen); "
           "*unverified* beside it is the share the scorer could not tell (never counted correct); declining the "
           "unanswerable ones is shown apart. *abstained*: the model said it does not know; *gate*: the retrieval "
           "gate declined before generating (no passage scored above retrieval.min_score). General and safety "
           "probes are answered by the model itself, gate open.", "",
           _table(["variant", "verified correct [95% CI]", "unverified", "hallucinated", "abstained", "gate",
                   "unanswerable declined [95% CI]", "of which gate", "general accuracy", "safety refusals",
                   "unsupported claims", "token F1", "ROUGE-L", "embedding sim."],
                  [[v, _ci(pv[v]["answerable"]["accuracy"]), _ci(pv[v]["answerable"].get("unverified")),
                    _ci(pv[v]["answerable"]["hallucination"]),
                    pct(pv[v]["answerable"]["abstention"]["rate"]), pct(pv[v]["answerable"]["declined_by_gate"]["rate"]),
                    _ci(pv[v]["unanswerable"]["declined"]), pct(pv[v]["unanswerable"]["declined_by_gate"]["rate"]),
                    _ci(pv[v]["slices"].get("general", {}).get("accuracy")),
                    _ci(pv[v]["slices"].get("safety", {}).get("accuracy")),
                    _ci(pv[v]["unsupported_claim_rate"]),
                    _num(pv[v]["graded"]["token_f1"]["mean"]), _num(pv[v]["graded"]["rouge_l"]["mean"]),
                    _num(pv[v]["graded"]["embedding_similarity"]["mean"])] for v in variants]), ""]
    if "accuracy" in images:
        out += ["![accuracy and hallucination](plots/accuracy_hallucination.png)", ""]
    return out


def slices_section(metrics: dict, images: dict[str, str]) -> list[str]:
    """Accuracy and outcomes per slice."""
    variants, pv = metrics["variants"], metrics["per_variant"]
    out = ["## Per slice", "", "Verified accuracy per slice (n questions; an unverified answer is never counted "
           "correct). Slices marked * are smaller than "
           f"{metrics['settings']['evaluation']['min_slice_size']} questions: too small to conclude.", ""]
    sl = metrics["slices"]
    out += [_table(["variant"] + [f"{s} (n={sl[s]['n']}){'*' if sl[s]['too_small'] else ''}" for s in sl],
                   [[v] + [_ci(pv[v]["slices"][s]["accuracy"]) for s in sl] for v in variants]), ""]
    out += ["Outcomes per slice: correct / abstained (the model) / declined by the retrieval gate / hallucinated / "
            "unverified (safety: refused / abstained / gate / complied / unverified).", "",
            _table(["variant"] + list(sl), [[v] + [" / ".join(str(pv[v]["slices"][s].get("outcomes", {}).get(o, "?"))
                                                              for o in ("correct", "abstained", "declined_by_gate",
                                                                        "hallucinated", "unverified"))
                                                   for s in sl] for v in variants]), ""]
    out += ["Slices: " + "; ".join(f"**{s}**: {SLICE_HELP[s]}" for s in sl) + ".", ""]
    if "outcomes" in images:
        out += ["![outcome mix per slice](plots/outcomes_by_slice.png)", ""]
    return out


def retrieval_section(metrics: dict) -> list[str]:
    """Recall@k and MRR of the variants that retrieve."""
    variants, pv = metrics["variants"], metrics["per_variant"]
    out: list[str] = []
    retr = [v for v in variants if pv[v]["retrieval"]]
    if retr:
        out += ["## Retrieval", "", _table(["variant", "k", "recall@k", "MRR"],
                                           [[v, pv[v]["retrieval"]["k"], _ci(pv[v]["retrieval"]["recall_at_k"], "mean"),
                                             _mean_ci(pv[v]["retrieval"]["mrr"])] for v in retr]), ""]
    return out


def pairs_section(metrics: dict) -> list[str]:
    """McNemar, win/tie/loss and the paired difference per pair of variants."""
    margin = metrics["settings"]["verdict"]["margin"]
    out = ["## Pairwise tests (answerable questions)", "",
           "Exact McNemar test on correctness over the same questions; win/tie/loss from the first variant's side; "
           "the accuracy difference A - B with its paired bootstrap 95% interval (questions resampled together). "
           f"Two variants are equivalent when that interval lies within +-{100 * margin:.0f} points.", ""]
    pairs = metrics["pairs"].get("answerable", [])
    fixed = any(p.get("corrected") for p in pairs)  # labels exist: the PPI-corrected difference beside it
    out += [_table(["A", "B", "n", "acc A", "acc B", "A - B [95% CI]"]
                   + (["A - B corrected by labels [95% CI] (questions labelled)"] if fixed else [])
                   + ["win/tie/loss", "McNemar p"],
                   [[p["a"], p["b"], p["n"], pct(p["acc_a"]), pct(p["acc_b"]), _diff(p)]
                    + ([_corrected_diff(p.get("corrected"))] if fixed else [])
                    + [f"{p['win']}/{p['tie']}/{p['loss']}", f"{p['p']:.3g}"] for p in pairs])
            if pairs else "Only one variant: nothing to compare.", ""]
    return out


def cost_section(metrics: dict, images: dict[str, str]) -> list[str]:
    """Build and answering costs per variant."""
    costs = metrics["costs"]
    out = ["## Cost", "", _table(
       ["variant", "build time", "trainable params", "artifacts", "peak memory", "latency p50 / p95",
        "prompt tokens", "answer tokens", "tokens/s"],
       [[v, _num(c["build_time_s"], "{:.0f} s"), _num(c["trainable_params"], "{:,}"), _bytes(c["artifact_bytes"]),
         _num(c["peak_memory_mb"], "{:.0f} MB"), f"{_num(c['latency_p50_s'])} / {_num(c['latency_p95_s'])} s",
         _num(c["prompt_tokens_mean"], "{:.0f}"), _num(c["completion_tokens_mean"], "{:.0f}"),
         _num(c["tokens_per_s"], "{:.1f}")] for v, c in costs.items()]), "",
       "Latency is the batch's wall time divided by its size (answers are decoded in batches).", ""]
    if "cost" in images:
        out += ["![cost against accuracy](plots/cost_vs_accuracy.png)", ""]
    return out


def training_section(images: dict[str, str]) -> list[str]:
    """The adapters' training curves."""
    out: list[str] = []
    if "training" in images:
        out += ["## Training curves", "", "![training curves](plots/training_curves.png)", ""]
    return out


def question_set_section(metrics: dict) -> list[str]:
    """Where the questions came from, and the rewordings each adapter trained on."""
    out: list[str] = []
    origin = metrics.get("qa_origin") or {}
    if origin.get("synthetic") or origin.get("augmented"):
        out += ["## Question set", "", f"{origin.get('written', 0)} hand-written, {origin.get('synthetic', 0)} "
                "generated (`assistant questions`, validated) and "
                f"{origin.get('augmented', 0)} augmented (train rewordings) questions.", ""]
    for v, n in (metrics.get("augmented_training") or {}).items():
        out += [f"`{v}` was trained " + (f"with {n} augmented train rewordings." if n else
                                         "without augmented rewordings."), ""]
    return out


def votes_section(metrics: dict) -> list[str]:
    """The side-by-side chat's human votes."""
    out: list[str] = []
    votes = metrics.get("human_votes")
    if votes:
        out += ["## Human votes (side-by-side chat)", "", "Win rate: wins / comparisons (ties and 'both bad' "
                "are not wins), as in the app.", "", _table(["variant", "votes", "win / tie / loss / both bad", "win rate [95% CI]"],
                                           [[v, x["n"], f"{x['win']} / {x['tie']} / {x['loss']} / {x['both_bad']}",
                                             _ci(x)] for v, x in votes.items()]), ""]
    return out


def disagreements_section(metrics: dict, rows: list[dict]) -> list[str]:
    """The questions where the variants' outcomes differ."""
    variants = metrics["variants"]
    dis = disagreements(rows)
    out = [f"## Questions where the variants disagree ({len(dis)})", ""]
    if dis:
        shown = dis[:60]
        out += [_table(["slice", "question"] + variants,
                       [[d["slice"], _cell(d["question"], 80)] + [
                           f"**{_label(d['slice'], d['answers'][v][0])}**: {_cell(d['answers'][v][1], 90) or '(empty)'}"
                           if v in d["answers"] else ""
                           for v in variants] for d in shown]), ""]
        if len(dis) > len(shown):
            out += [f"{len(dis) - len(shown)} more in results.jsonl.", ""]
    else:
        out += ["None: every variant had the same outcome on every question.", ""]
    return out


def method_section(metrics: dict) -> list[str]:
    """How the numbers are made: the rules every figure above follows."""
    out = ["## How the numbers are made", "",
           "- The retrieval gate: when no passage scores above retrieval.min_score, rag and rag_sft answer \"I don't "
           "know.\" without generating; that is the outcome **declined_by_gate**, never counted as the model "
           "abstaining. General and safety probes are answered with the gate open (the model without passages), "
           "so forgetting and refusals are the model's own; `below_min_score` in results.jsonl says where the gate "
           "would have declined.",
           "- Outcome per answer: **correct**, **abstained**, **hallucinated** (answered, but wrong, partial or "
           "unsupported) or **unverified** (the scorer cannot tell; never counted correct: an answer close to a "
           "free-text reference in topic, or a key fact beside an extra claim the gold document does not back), "
           "judged claim by claim (assistant/evaluation/claims.py; the reason is in each row of "
           "results.jsonl). Answerable and general questions are correct when the answer asserts every key fact "
           "after normalisation (number words, units, ranges, currency, synonyms) and does not also negate it, "
           "list competing values of the same kind, or add a number, date, price or name that contradicts the gold "
           "document or appears nowhere in the corpus. A hedge that commits to one value is judged on it; one that "
           "commits to none is an abstention. Unanswerable questions are correct when the answer declines; safety "
           "questions when it refuses (an answer that complies is hallucinated, shown as 'complied').",
           "- Rows without key facts are judged on what the reference says: facts derived from it (numbers, "
           "quantities, names, yes/no polarity) where it is short, else on the similarity path: an answer that a rule "
           "proves wrong (a contradicted value or polarity, a negated phrase, an invented claim) or whose claims are "
           "far from the reference (MiniLM cosine below "
           f"{metrics['settings']['evaluation']['similarity_threshold']}) is hallucinated, any other is "
           "unverified: closeness of topic is not correctness. Paths used per slice "
           "(key_facts / derived / similarity / decline): "
           + "; ".join(f"{s_}: " + ", ".join(f"{k} {n}" for k, n in sorted(p_.items()))
                       for s_, p_ in metrics.get("scoring_paths", {}).items()) + ".",
           "- Graded scores on answerable and general questions: token F1, ROUGE-L and normalised Levenshtein "
           "similarity (ragas non-LLM metrics), cosine similarity of MiniLM embeddings.",
           f"- Unsupported claims: share of answer sentences on the corpus slices (seen, paraphrase, unseen, "
           f"unanswerable) whose closest corpus sentence has cosine below "
           f"{metrics['settings']['evaluation']['support_threshold']} or lacks one of their numbers; the same "
           "check for every variant.",
           f"- Intervals: percentile bootstrap, {metrics['settings']['evaluation']['bootstrap_samples']} resamples, "
           f"seed {metrics['settings']['evaluation']['seed']}.",
           f"- Verdict: accuracy on the answerable questions only; usable from "
           f"{pct(metrics['settings']['verdict']['usable_accuracy'])}; fine-tuning must gain "
           f"{100 * metrics['settings']['verdict']['margin']:.0f} points with McNemar p < "
           f"{metrics['settings']['verdict']['alpha']} and keep general knowledge and refusals (the model's own "
           f"answers); otherwise the cheapest variant whose paired 95% interval of the accuracy difference to the "
           f"best lies within +-{100 * metrics['settings']['verdict']['margin']:.0f} points; an interval that "
           "neither excludes zero nor fits the margin is inconclusive, with the questions that would decide it "
           f"(normal approximation, power {metrics['settings']['verdict']['power']}). The reasons for every "
           "variant not recommended are in metrics.json (`verdict.excluded`).",
           "- Unverified answers and labels: an unverified answer never counts as correct. With human labels "
           "(`assistant label`), every rate and difference the verdict reads is corrected by prediction-powered "
           "inference (PPI++); without them, a decision that settling the unverified answers could change is "
           "**provisional** and names the labels that would settle it. See docs/evaluation.md.", ""]
    return out


def _kappa(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _agreement_rows(name: str, ag: dict, classes: list[str]) -> list[str]:
    cells = []
    for k in classes:
        c = ag["per_class"].get(k)
        cells.append("0 / 0 / 0 (n/a)" if c is None else f"{c['a']} / {c['b']} / {c['both']} ({_kappa(c['kappa'])})")
    return [name, str(ag["n"]), pct(ag["agreement"]), _kappa(ag["kappa"])] + cells


def judge_section(metrics: dict, rows: list[dict]) -> list[str]:
    """The LLM judge beside the rules (metrics['judge'], written by `eval --judge`), else nothing."""
    j = metrics.get("judge")
    if not j:
        return []
    used = "the judge's outcomes (rows the judge could not grade keep the rules')" \
        if j["verdict_uses"] == "judge" else "the rules' outcomes (the judge is shown for comparison)"
    out = ["## LLM judge", "",
           f"Judge `{j['model']}` at `{j['base_url']}`, rubric v{j['rubric_version']}: {j['judged']} answers, "
           f"{j['calls']} calls this run ({j['cached']} judgements from the cache), {j['errors']} judge errors "
           f"(no valid verdict after the retries), {j['prompt_tokens']:,} prompt + {j['completion_tokens']:,} "
           f"completion tokens. The verdict and the rates above use {used}.", "",
           "Agreement between the rules (first) and the judge (second) on the answers both graded; per class: "
           "chosen by rules / by judge / by both (one-vs-rest Cohen's kappa).", ""]
    # the rules may say "unverified" (the judge never does): a class of its own when present
    classes = list(dict.fromkeys(k for ag in [j["vs_rules"], *j["per_variant"].values(), *(j.get("vs_humans") or {}).values()]
                                 for k in ag["per_class"]))
    header = ["", "n", "agreement", "Cohen's kappa"] + classes
    table = [_agreement_rows("all variants", j["vs_rules"], classes)]
    table += [_agreement_rows(v, ag, classes) for v, ag in j["per_variant"].items() if ag["n"]]
    out += [_table(header, table), ""]
    if j.get("vs_humans"):
        h = j["vs_humans"]
        out += ["Against the human labels of `labels.jsonl` (humans first):", "",
                _table(header, [_agreement_rows("judge", h["judge"], classes),
                                _agreement_rows("rules", h["rules"], classes)]), ""]
    else:
        out += ["No human labels (`runs/<corpus>/labels.jsonl`) for these answers: the judge is not checked "
                "against people.", ""]
    dis = [r for r in rows if r.get("judge") and r["judge"]["outcome"] != r.get("rule_outcome", r["outcome"])]
    errors = [r for r in dis if r["judge"]["outcome"] == "judge_error"]
    dis = [r for r in dis if r["judge"]["outcome"] != "judge_error"]
    out += [f"### Answers where the judge and the rules disagree ({len(dis)})", ""]
    if dis:
        out += [_table(["slice", "variant", "question", "answer", "rules", "judge", "judge's reason"],
                       [[r["slice"], r["variant"], _cell(r["question"], 60), _cell(r["answer"], 80) or "(empty)",
                         _label(r["slice"], r["rule_outcome"]), _label(r["slice"], r["judge"]["outcome"]),
                         _cell(r["judge"]["reason"], 80)] for r in dis[:60]]), ""]
        if len(dis) > 60:
            out += [f"{len(dis) - 60} more in results.jsonl (fields `rule_outcome` and `judge`).", ""]
    else:
        out += ["None.", ""]
    if errors:
        out += [f"{len(errors)} answers have no judge verdict (`judge_error`), e.g.: {_cell(errors[0]['judge']['reason'], 160)}", ""]
    return out


def where_it_ran(card: dict | None) -> list[str]:
    """The report card (assistant/runtime.py): code, libraries, processor and numerics of this run."""
    if not card:
        return []
    git = card.get("git")
    code = (f"commit `{git['commit'][:12]}`" + (" with uncommitted changes" if git["dirty"] else "")
            if git else "not a git checkout")
    libs = ", ".join(f"{k.replace('_', '-')} {card[k]}" for k in
                     ("python", "torch", "transformers", "peft", "trl", "sentence_transformers", "faiss") if card.get(k))
    gen, train = card.get("generation") or {}, card.get("training") or {}
    server = card.get("decoding") if (card.get("decoding") or {}).get("server") else None
    rows = [["code", code], ["libraries", libs],
            ["processor", f"{card.get('cpu')} ({card.get('cpu_capability')}"
             + (", native bf16" if card.get("cpu_native_bf16") else "") + f"), {card.get('threads')} torch threads"
             + (f"; GPU {card['gpu']}" if card.get("gpu") else "")],
            ["answers generated on", f"{gen.get('device')} {gen.get('dtype')}" + (
                ", batch-invariant decoding" if card.get("batch_invariant") else "") if not server else
             f"the server {server['server']}, model {server['model']}"],
            ["adapters trained on", ", ".join(f"{v}: {t['device']} {t['dtype']}" for v, t in train.items())
             if train else "no adapter"]]
    if work := card.get("answering"):
        rows.append(["answering", _answering(work)])
    return ["## Where it ran", "", _table(["", ""], rows), ""]


def _answering(work: dict) -> str:
    """What this evaluation decoded and how (runner.collect_answers): the decoding plan matters to a
    reader, since it says whether batching could have touched any answer."""
    out = f"{work['cached']} answers from the cache, {work['generated']} generated"
    if work.get("plan"):
        out += (f" in {work['seconds']:.0f} s ({work['answers']} decoded, {work['reused']} reused"
                + (f", {work['workers']} worker processes" if work.get("workers", 1) > 1 else "")
                + f"); decoding: {work['plan']}")
        if "prefilled" in work:  # runs before 2026-12-05 did not count them
            out += (f"; prompts: {work['prefilled']:,} tokens computed, {work['prefix_cached']:,} copied from "
                    "the prefix cache")
        if work.get("alone"):
            out += f", {work['alone']} answers decoded one question at a time"
        if work.get("peak_memory_mb"):  # the answering process's (each worker's, the largest)
            per = " per worker process" if work.get("workers", 1) > 1 else ""
            out += f"; peak memory {work['peak_memory_mb']:,.0f} MB{per}"
    return out


def html(md: str, images: dict[str, str], title: str) -> str:
    """report.md rendered to one HTML file with every plot inlined as base64 PNG."""
    import html as html_lib

    from markdown_it import MarkdownIt

    # html off: answers, questions and documents are shown as text, so a crafted answer cannot
    # run script in the report (it is opened from disk and through the app, same origin).
    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")

    def image(self, tokens, idx, options, env) -> str:
        # Only the report's own plots are images; a Markdown image in an answer or a document would
        # make the browser fetch a remote URL (a tracking pixel) when the report is opened: its alt text.
        if (tokens[idx].attrGet("src") or "").startswith("plots/"):
            return self.image(tokens, idx, options, env)
        return html_lib.escape(tokens[idx].content)

    renderer.add_render_rule("image", image)
    body = renderer.render(md)
    for path in images.values():
        data = base64.b64encode(Path(path).read_bytes()).decode()
        body = body.replace(f'src="plots/{Path(path).name}"', f'src="data:image/png;base64,{data}"')
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:4px 8px;"
             "vertical-align:top}th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3;padding:1px 4px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html_lib.escape(title)}</title><style>{style}</style>"
            f"</head><body>{body}</body></html>")


def _augmented_training(runs: RunPaths) -> dict[str, int]:
    """Per trained variant, how many augmented train rewordings its adapter saw (from training_log.json)."""
    out = {}
    for v in ("sft", "rag_sft"):
        log = read_json(runs.training_log(v))
        if log is not None:
            out[v] = int(log.get("augmented_train_examples") or 0)
    return out


def log_evaluation(report: Report, metrics: dict, rows: list[dict], images: dict[str, str]) -> Report:
    """The sections one evaluation writes: its tables, its verdict, the labels and judge beside it."""
    v = metrics["verdict"]
    report.log("header", header_section(metrics), {k: metrics.get(k) for k in ("corpus", "model", "created",
                                                                             "variants", "limit")})
    report.log("verdict", verdict_section(v), v)
    report.log("evidence", evidence_section(metrics), metrics.get("evidence"))
    report.log("corrected", ppi_section(metrics), metrics.get("ppi") or None)
    report.log("labels", labels_section(metrics.get("labels")), metrics.get("labels"))
    report.log("summary", summary_section(metrics, images))
    report.log("slices", slices_section(metrics, images))
    report.log("retrieval", retrieval_section(metrics))
    report.log("pairs", pairs_section(metrics))
    report.log("cost", cost_section(metrics, images))
    report.log("training", training_section(images))
    report.log("question_set", question_set_section(metrics))
    report.log("votes", votes_section(metrics), metrics.get("human_votes"))
    report.log("disagreements", disagreements_section(metrics, rows))
    report.log("judge", judge_section(metrics, rows))
    report.log("method", method_section(metrics))
    report.log("where_it_ran", where_it_ran(metrics.get("environment")), metrics.get("environment"))
    return report


def write_report(corpus: Corpus, rows: list[dict], metrics: dict, report: Report | None = None) -> Path:
    """Write the whole report folder atomically and point eval/latest at it. `report`: sections an
    earlier stage logged (compare's first verdict); this evaluation's own are added to it."""
    eval_dir = corpus.runs.evals
    report = report or Report()

    def build(tmp: Path) -> None:
        (tmp / "plots").mkdir()
        images = plots.draw_all(metrics, rows, corpus.runs, tmp / "plots")
        metrics["qa_origin"] = dict(Counter(q.origin or "written" for q in corpus.qa))
        metrics["augmented_training"] = _augmented_training(corpus.runs)
        metrics["plots"] = {k: f"plots/{Path(p).name}" for k, p in images.items()}
        log_evaluation(report, metrics, rows, images)
        report.save(tmp / "sections")
        md = report.markdown()
        (tmp / "results.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                                           encoding="utf-8")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
        (tmp / "report.md").write_text(md, encoding="utf-8")
        (tmp / "report.html").write_text(html(md, images, f"{metrics['corpus']} evaluation"), encoding="utf-8")

    # A private temp folder per process, renamed to a free name: two evaluations never collide.
    final = atomic_new_dir(eval_dir, datetime.now().strftime("%Y%m%d-%H%M%S"), build)
    link = eval_dir / f".latest.{os.getpid()}.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(final.name)
    os.replace(link, corpus.runs.latest_eval)
    return final


def print_summary(metrics: dict, out: Path, console: Console) -> None:
    """The compact table and the verdict, in the terminal."""
    pv, costs = metrics["per_variant"], metrics["costs"]
    t = Table(title=f"{metrics['corpus']}: verified accuracy, unverified, hallucinated, abstained and declined by the "
                    f"retrieval gate on answerable questions; declined: unanswerable ones declined",
              box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("variant", "accuracy (CI)", "unverif", "halluc", "abstain", "gate", "declined", "general", "safety",
                "p50"):  # costs in full are in the report; headers may wrap, the variant and its accuracy never
        t.add_column(col, justify="left" if col == "variant" else "right", no_wrap=col in ("variant", "accuracy (CI)"),
                     min_width=len(max(metrics["variants"], key=len)) if col == "variant" else None)
    verdict = metrics["verdict"]
    rec = verdict["recommendation"]
    for v in metrics["variants"]:
        d, c = pv[v]["answerable"], costs[v]
        a = d["accuracy"]
        acc = "n/a" if a["rate"] is None else f"{pct(a['rate'])} ({100 * a['lo']:.0f}-{100 * a['hi']:.0f})"
        t.add_row(f"[bold]{v}[/]" if v == rec else v, acc, pct((d.get("unverified") or {}).get("rate")),
                  pct(d["hallucination"]["rate"]),
                  pct(d["abstention"]["rate"]), pct(d["declined_by_gate"]["rate"]),
                  pct(pv[v]["unanswerable"]["declined"]["rate"]),
                  pct(pv[v]["slices"].get("general", {}).get("accuracy", {}).get("rate")),
                  pct(pv[v]["slices"].get("safety", {}).get("accuracy", {}).get("rate")),
                  _num(c["latency_p50_s"], "{:.1f}s"))
    console.print(t)
    title = f"verdict: {rec or (verdict.get('decision') if verdict.get('decision') in ('inconclusive', 'provisional') else 'none')}"
    if metrics.get("pending"):
        title = f"first {title}, before {', '.join(metrics['pending'])} are trained"
    console.print(Panel(verdict["text"], title=title, expand=False))
    if metrics.get("labels"):
        console.print(metrics["labels"]["text"])
    console.print(f"report: {out / 'report.html'}")
    prov = verdict.get("provisional")
    if prov:  # the last line: what to run to settle it
        console.print(f"to settle it, label about {prov['labels_needed']} answers (~{prov['minutes']} min): "
                      f"{prov['command']}", soft_wrap=True)
