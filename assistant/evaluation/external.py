"""`assistant score`: score answers from any system (a production bot, another tool) with the same scorer.

Input: a JSONL file, one answer a line: `id`, `question`, `answer`, and optionally `kind` (default
`answerable`), `reference`, `key_facts`, `source` and `label` (a person's outcome). When `id` names a
QA row of the corpus, that row's reference, key facts, kind and source fill what the line leaves
out. Output: every input row plus `outcome`, `reason` and `scoring_path` (key_facts, derived, similarity or decline),
rates with bootstrap intervals, and, when rows carry labels, the scorer's agreement with them.
With `--summary FILE.json`: the rates of correct, hallucinated and abstained answers, automatic and
corrected by the labelled rows with prediction-powered inference (evaluation/ppi.py). The rows that
carry `label` must be a uniformly random sample of the file's rows for the intervals to be valid.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from assistant.corpus.corpus import Corpus
from assistant.errors import UsageError
from assistant.evaluation import judge as J
from assistant.evaluation import metrics as M
from assistant.evaluation.labels import LABELS as HUMAN_LABELS
from assistant.evaluation.ppi import TARGETS, estimate, human_value, prediction
from assistant.evaluation.stats import rate
from assistant.storage import atomic_write_json, atomic_write_text

KINDS = ("answerable", "unanswerable", "general", "safety")
# Older label files call an answer with an unsupported claim "unsupported": it is a hallucination.
LABEL_ALIASES = {"unsupported": "hallucinated", "complied": "hallucinated", "refused": "correct"}


def read_answers(path: Path) -> list[dict]:
    """Rows of an answers file; every bad line is reported as `file:line: what is wrong`."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read ({e.__class__.__name__}); give a UTF-8 JSONL file") from None
    rows, problems, seen = [], [], {}
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            problems.append(f"{where}: invalid JSON ({e.msg} at column {e.colno}); fix the line")
            continue
        if not isinstance(row, dict):
            problems.append(f"{where}: expected a JSON object with id, question and answer")
            continue
        missing = [k for k in ("id", "answer") if k not in row]
        if missing:
            problems.append(f"{where}: missing {', '.join(repr(k) for k in missing)}; every row needs id and answer")
            continue
        bad = [k for k in ("id", "question", "answer", "reference", "source", "kind", "label")
               if k in row and not isinstance(row[k], str)]
        if bad:
            problems.append(f"{where}: {bad[0]!r} must be a string")
            continue
        if "key_facts" in row and not (isinstance(row["key_facts"], list)
                                       and all(isinstance(f, str) for f in row["key_facts"])):
            problems.append(f"{where}: 'key_facts' must be a list of strings")
            continue
        if row.get("kind", "answerable") not in KINDS:
            problems.append(f"{where}: kind {row['kind']!r} is not one of {', '.join(KINDS)}")
            continue
        label = row.get("label")
        if label is not None and LABEL_ALIASES.get(label, label) not in HUMAN_LABELS:
            # A person's label is one of the three outcomes: "unverified" is the scorer's, never a label.
            problems.append(f"{where}: label {label!r} is not one of {', '.join(HUMAN_LABELS)}")
            continue
        key = row["id"]
        if key in seen:
            problems.append(f"{where}: duplicate id {key!r} (first on line {seen[key]}); make ids unique")
            continue
        seen[key] = n
        rows.append(row)
    if problems:
        raise UsageError("\n".join(problems))
    if not rows:
        raise UsageError(f"{path}: no answers; write one JSON object a line with id, question and answer")
    return rows


def fill_from_corpus(rows: list[dict], corpus: Corpus) -> list[dict]:
    """Rows with what they leave out taken from the corpus QA row of the same id (or `qa_id`)."""
    qa = {q.id: q for q in corpus.qa}
    out = []
    for row in rows:
        q = qa.get(row["id"]) or qa.get(row.get("qa_id", ""))
        r = dict(row)
        if q is not None:
            r.setdefault("question", q.question)
            r.setdefault("kind", q.kind)
            r.setdefault("reference", q.answer)
            r.setdefault("key_facts", list(q.key_facts))
            r.setdefault("source", q.source)
        r.setdefault("question", "")
        r.setdefault("kind", "answerable")
        r.setdefault("reference", "")
        r.setdefault("key_facts", [])
        r.setdefault("source", "")
        out.append(r)
    return out


def score_answers(corpus: Corpus, rows: list[dict]) -> list[dict]:
    """Every row plus `outcome`, `reason` and `path`, judged exactly as `assistant eval` judges."""
    rows = fill_from_corpus(rows, corpus)
    facts = M.CorpusFacts.from_texts([d.text for d in corpus.documents])
    threshold = corpus.config.evaluation.similarity_threshold
    need = [i for i, r in enumerate(rows) if M.needs_similarity(r["kind"], r["key_facts"], r["reference"], r["question"])]
    sims: dict[int, float] = {}
    if need:
        embedder = M.load_embedder(corpus.config.retrieval.embedder)
        got = M.answer_similarities(embedder, [rows[i]["answer"] for i in need], [rows[i]["reference"] for i in need])
        sims = dict(zip(need, got))
    out = []
    for i, r in enumerate(rows):
        doc = corpus.document(r["source"]) if r["source"] else None
        gold = M.gold_section(doc.text, r["reference"], r["question"]) if doc else ""
        ctx = M.Context(facts, gold, r["question"])
        j = M.judge(r["kind"], r["answer"], r["key_facts"], r["reference"], ctx, sims.get(i), threshold)
        out.append({**r, "outcome": j.outcome, "reason": j.reason, "scoring_path": j.path,
                    **({"similarity": round(j.similarity, 4)} if j.similarity is not None else {})})
    return out


def summary(rows: list[dict], n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Outcome rates with bootstrap 95% intervals, overall and per kind."""
    groups = [("all", rows)] + [(k, [r for r in rows if r["kind"] == k]) for k in KINDS]
    out = []
    for name, rs in groups:
        if not rs:
            continue
        out.append({"rows": name, "n": len(rs),
                    **{o: rate([r["outcome"] == o for r in rs], n_boot, seed) for o in M.OUTCOMES}})
    return out


def agreement(rows: list[dict], n_boot: int = 2000, seed: int = 0) -> dict | None:
    """Scorer vs human labels: overall (with CI), per label class, Cohen's kappa, confusion matrix."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    labelled = [r for r in rows if r.get("label") is not None]
    if not labelled:
        return None
    human = [LABEL_ALIASES.get(r["label"], r["label"]) for r in labelled]
    scorer = [r["outcome"] for r in labelled]
    same = [h == s for h, s in zip(human, scorer)]
    per_class = {c: rate([s for h, s in zip(human, same) if h == c], n_boot, seed)
                 for c in M.OUTCOMES if c in human}
    kappa = float(cohen_kappa_score(human, scorer, labels=list(M.OUTCOMES))) if len(set(human + scorer)) > 1 else 1.0
    matrix = confusion_matrix(human, scorer, labels=list(M.OUTCOMES)).tolist()
    return {"n": len(labelled), "overall": rate(same, n_boot, seed), "per_class": per_class, "kappa": kappa,
            "labels": list(M.OUTCOMES), "confusion": matrix,
            "by_path": {p: rate([s for r, s in zip(labelled, same) if r["scoring_path"] == p], n_boot, seed)
                        for p in sorted({r["scoring_path"] for r in labelled})}}


def agreement_by(rows: list[dict], field: str) -> dict[str, dict]:
    """Agreement per value of a row field (e.g. probe_kind, corpus, variant)."""
    values = sorted({str(r.get(field)) for r in rows if r.get("label") is not None and r.get(field) is not None})
    out = {}
    for v in values:
        a = agreement([r for r in rows if str(r.get(field)) == v])
        if a:
            out[v] = a
    return out


def calibrate_threshold(rows: list[dict]) -> tuple[float, float, int]:
    """(threshold, agreement, n): the similarity threshold that best reproduces the labels of the
    similarity-path rows (scored rows with `similarity`), midway between neighbouring cosines.

    Only ever run on the tuning half of the labels; the held-out half measures the result."""
    pts = sorted((r["similarity"], LABEL_ALIASES.get(r["label"], r["label"]) == "correct") for r in rows
                 if r.get("similarity") is not None and r.get("label") is not None
                 and LABEL_ALIASES.get(r["label"], r["label"]) != "abstained")
    if not pts:
        return M.SIMILARITY_THRESHOLD, float("nan"), 0
    cuts = [pts[0][0] - 1e-3] + [(a[0] + b[0]) / 2 for a, b in zip(pts, pts[1:])] + [pts[-1][0] + 1e-3]
    best = max(cuts, key=lambda t: (sum((s >= t) == ok for s, ok in pts), -abs(t - M.SIMILARITY_THRESHOLD)))
    return float(best), sum((s >= best) == ok for s, ok in pts) / len(pts), len(pts)


def _pct(x: dict) -> str:
    if x["rate"] is None:
        return "-"
    return f"{x['rate']:.0%} ({x['lo']:.0%}-{x['hi']:.0%})"


def print_report(rows: list[dict], console=None) -> None:
    """The summary table and, with labels, agreement, kappa and the confusion matrix."""
    console = console or Console()
    t = Table(title=f"scored {len(rows)} answers (95% bootstrap intervals)")
    for col in ("rows", "n", *M.OUTCOMES):
        t.add_column(col, justify="left" if col == "rows" else "right")
    for s in summary(rows):
        t.add_row(s["rows"], str(s["n"]), *(_pct(s[o]) for o in M.OUTCOMES))
    console.print(t)
    paths = Counter(r["scoring_path"] for r in rows)
    console.print("scoring paths: " + ", ".join(f"{p} {n}" for p, n in sorted(paths.items())))
    a = agreement(rows)
    if a is None:
        return
    console.print(f"agreement with {a['n']} labels: {_pct(a['overall'])}, Cohen's kappa {a['kappa']:.2f}")
    t = Table(title="agreement per label class and per scoring path")
    t.add_column("rows")
    t.add_column("n", justify="right")
    t.add_column("agreement", justify="right")
    for c, r in a["per_class"].items():
        t.add_row(f"label {c}", str(r["n"]), _pct(r))
    for p, r in a["by_path"].items():
        t.add_row(f"path {p}", str(r["n"]), _pct(r))
    for field in ("probe_kind", "corpus", "variant"):
        groups = agreement_by(rows, field)
        for v, b in groups.items() if len(groups) > 1 else ():
            t.add_row(f"{field} {v}", str(b["n"]), _pct(b["overall"]))
    console.print(t)
    t = Table(title="confusion matrix (rows: label, columns: scorer)")
    t.add_column("label \\ scorer")
    for c in a["labels"]:
        t.add_column(c, justify="right")
    for c, line in zip(a["labels"], a["confusion"]):
        t.add_row(c, *(str(x) for x in line))
    console.print(t)


def ppi_summary(rows: list[dict], alpha: float = 0.05) -> dict:
    """`--summary`: for each of correct, hallucinated, abstained, the automatic rate over all rows
    and the PPI++ rate corrected by the labelled rows, with its (1 - alpha) interval; `labelled` is
    their count. An `unverified` outcome predicts nothing (ppi.prediction); the labelled rows must
    be a uniformly random sample of the rows (the intervals assume it)."""
    def rates(rs: list[dict]) -> dict:
        lab = [r for r in rs if r.get("label") is not None]
        out = {}
        for t in TARGETS:
            e = estimate([prediction(r["outcome"], t) for r in rs], [prediction(r["outcome"], t) for r in lab],
                         [human_value(LABEL_ALIASES.get(r["label"], r["label"]), t) for r in lab], alpha)
            out[t] = {k: e[k] for k in ("automatic", "corrected", "ci", "bias", "labelled", "n", "lambda")}
        return out

    labelled = sum(1 for r in rows if r.get("label") is not None)
    return {"n": len(rows), "labelled": labelled, "unverified": sum(r["outcome"] == "unverified" for r in rows),
            "confidence": 1 - alpha, "method": "PPI++ mean (ppi_py), labelled rows taken as a uniform random sample",
            "rates": rates(rows),
            "kinds": {k: {"n": len(rs), "labelled": sum(1 for r in rs if r.get("label") is not None),
                          "rates": rates(rs)} for k in KINDS if (rs := [r for r in rows if r["kind"] == k])}}


def print_ppi(s: dict, console=None) -> None:
    console = console or Console()
    if not s["labelled"]:
        console.print(f"no row carries a label: the rates above are the scorer's alone ({s['unverified']} "
                      "unverified); label a random sample of rows (field `label`) to correct them")
        return
    fmt = lambda e: (f"{e['corrected']:.0%} ({e['ci'][0]:.0%}-{e['ci'][1]:.0%})" if e["ci"] is not None
                     else f"{e['corrected']:.0%}")
    console.print(f"corrected by {s['labelled']} labels (PPI++, 95% intervals; automatic in brackets): "
                  + ", ".join(f"{t} {fmt(e)} [{e['automatic']:.0%}]" for t, e in s["rates"].items()), soft_wrap=True)


def run_score(answers: Path, corpus: Corpus, out: Path | None = None, judge: bool = False,
              summary_path: Path | None = None) -> list[dict]:
    """Read, score, write (atomically) and print: the `assistant score` verb. With `judge`, the LLM
    judge of corpus.yaml's `judge:` section grades every row too (`judge` field, cached under
    runs/<corpus>/score/cache); `judge.verdict_uses: judge` makes its grade the row's outcome."""
    rows = score_answers(corpus, read_answers(answers))
    if judge:
        rows = judge_scored(corpus, rows)
    if out is not None:
        atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print_report(rows)
    if summary_path is not None:
        s = ppi_summary(rows)
        atomic_write_json(summary_path, s)
        print_ppi(s)
    return rows


def judge_scored(corpus: Corpus, rows: list[dict]) -> list[dict]:
    """Grade scored rows with the LLM judge (in place) and print how it agrees with the rules and,
    where rows carry a `label`, how each agrees with the labels."""
    settings = corpus.config.judge
    asked = [{**r, "slice": r["kind"]} for r in rows]  # the judge reads the kind from `slice`
    judgements = J.judge_rows(asked, settings, corpus.runs.score_cache)
    J.apply_judgements(rows, judgements, settings.verdict_uses)
    ok = [(r, j.outcome) for r, j in zip(rows, judgements) if j.outcome in M.OUTCOMES]
    console = Console()
    vs = J.agreement([r["rule_outcome"] for r, _ in ok], [o for _, o in ok])
    line = f"judge {settings.model}: {len(ok)} of {len(rows)} graded, {vs['agreement'] or 0:.0%} agree with the rules"
    labelled = [(LABEL_ALIASES.get(r["label"], r["label"]), r["rule_outcome"], o) for r, o in ok if r.get("label")]
    if labelled:
        human = [h for h, _, _ in labelled]
        rules = J.agreement(human, [x for _, x, _ in labelled])["agreement"]
        judged = J.agreement(human, [x for _, _, x in labelled])["agreement"]
        line += f"; with {len(labelled)} labels: judge {judged:.0%}, rules {rules:.0%}"
    console.print(line + f" (outcome from: {settings.verdict_uses})", soft_wrap=True)
    return rows
