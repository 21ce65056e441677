"""The report folder: results.jsonl, metrics.json, report.md, a self-contained report.html, plots/.

Everything is written into `eval/.<timestamp>.tmp/` and renamed into place at the end, so a report
folder that exists is complete; `eval/latest` is then swapped atomically to point at it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from datetime import datetime
from pathlib import Path

from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from ..corpus import Corpus
from . import plots
from .verdict import pct

SLICE_HELP = {
    "seen": "train questions asked again (memorisation)",
    "paraphrase": "held-out wording of a fact that has train wordings",
    "unseen": "facts with no train wording",
    "unanswerable": "the corpus does not hold the answer: abstaining is correct",
    "general": "general knowledge the base model had (forgetting)",
    "safety": "requests an aligned assistant refuses: refusing is correct, answering is 'complied'",
}


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


def markdown(metrics: dict, rows: list[dict], images: dict[str, str]) -> str:
    variants = metrics["variants"]
    pv, costs = metrics["per_variant"], metrics["costs"]
    out = [f"# Evaluation of `{metrics['corpus']}`", "",
           f"Model `{metrics['model']}`, {metrics['created']}, variants: {', '.join(variants)}"
           + (f", at most {metrics['limit']} questions per slice" if metrics.get("limit") else "") + ".", "",
           "## Verdict", "", f"**Recommendation: {metrics['verdict']['recommendation'] or 'none'}**", "",
           metrics["verdict"]["text"], ""]
    out += ["## Summary (domain slices: paraphrase + unseen + unanswerable)", "",
            _table(["variant", "accuracy [95% CI]", "hallucination", "abstention", "general accuracy",
                    "safety refusals", "unsupported claims", "token F1", "ROUGE-L", "embedding sim."],
                   [[v, _ci(pv[v]["domain"]["accuracy"]), _ci(pv[v]["domain"]["hallucination"]),
                     _ci(pv[v]["domain"]["abstention"]),
                     _ci(pv[v]["slices"].get("general", {}).get("accuracy")),
                     _ci(pv[v]["slices"].get("safety", {}).get("accuracy")),
                     _ci(pv[v]["unsupported_claim_rate"]),
                     _num(pv[v]["graded"]["token_f1"]["mean"]), _num(pv[v]["graded"]["rouge_l"]["mean"]),
                     _num(pv[v]["graded"]["embedding_similarity"]["mean"])] for v in variants]), ""]
    if "accuracy" in images:
        out += ["![accuracy and hallucination](plots/accuracy_hallucination.png)", ""]
    out += ["## Per slice", "", "Accuracy per slice (n questions). Slices marked * are smaller than "
            f"{metrics['settings']['evaluation']['min_slice_size']} questions: too small to conclude.", ""]
    sl = metrics["slices"]
    out += [_table(["variant"] + [f"{s} (n={sl[s]['n']}){'*' if sl[s]['too_small'] else ''}" for s in sl],
                   [[v] + [_ci(pv[v]["slices"][s]["accuracy"]) for s in sl] for v in variants]), ""]
    out += ["Slices: " + "; ".join(f"**{s}**: {SLICE_HELP[s]}" for s in sl) + ".", ""]
    if "outcomes" in images:
        out += ["![outcome mix per slice](plots/outcomes_by_slice.png)", ""]
    retr = [v for v in variants if pv[v]["retrieval"]]
    if retr:
        out += ["## Retrieval", "", _table(["variant", "k", "recall@k", "MRR"],
                                           [[v, pv[v]["retrieval"]["k"], _ci(pv[v]["retrieval"]["recall_at_k"], "mean"),
                                             _mean_ci(pv[v]["retrieval"]["mrr"])] for v in retr]), ""]
    out += ["## Pairwise tests (domain slices)", "",
            "Exact McNemar test on correctness over the same questions; win/tie/loss from the first variant's side.", ""]
    pairs = metrics["pairs"].get("domain", [])
    out += [_table(["A", "B", "n", "acc A", "acc B", "win/tie/loss", "McNemar p"],
                   [[p["a"], p["b"], p["n"], pct(p["acc_a"]), pct(p["acc_b"]), f"{p['win']}/{p['tie']}/{p['loss']}",
                     f"{p['p']:.3g}"] for p in pairs]) if pairs else "Only one variant: nothing to compare.", ""]
    out += ["## Cost", "", _table(
        ["variant", "build time", "trainable params", "artifacts", "peak memory", "latency p50 / p95",
         "prompt tokens", "answer tokens", "tokens/s"],
        [[v, _num(c["build_time_s"], "{:.0f} s"), _num(c["trainable_params"], "{:,}"), _bytes(c["artifact_bytes"]),
          _num(c["peak_memory_mb"], "{:.0f} MB"), f"{_num(c['latency_p50_s'])} / {_num(c['latency_p95_s'])} s",
          _num(c["prompt_tokens_mean"], "{:.0f}"), _num(c["completion_tokens_mean"], "{:.0f}"),
          _num(c["tokens_per_s"], "{:.1f}")] for v, c in costs.items()]), "",
        "Latency is the batch's wall time divided by its size (answers are decoded in batches).", ""]
    if "cost" in images:
        out += ["![cost against accuracy](plots/cost_vs_accuracy.png)", ""]
    if "training" in images:
        out += ["## Training curves", "", "![training curves](plots/training_curves.png)", ""]
    votes = metrics.get("human_votes")
    if votes:
        out += ["## Human votes (side-by-side chat)", "", "Win rate: wins / comparisons (ties and 'both bad' "
                "are not wins), as in the app.", "", _table(["variant", "votes", "win / tie / loss / both bad", "win rate [95% CI]"],
                                           [[v, x["n"], f"{x['win']} / {x['tie']} / {x['loss']} / {x['both_bad']}",
                                             _ci(x)] for v, x in votes.items()]), ""]
    dis = disagreements(rows)
    out += [f"## Questions where the variants disagree ({len(dis)})", ""]
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
    out += ["## How the numbers are made", "",
            "- Outcome per answer: **correct**, **abstained** or **hallucinated** (answered, but wrong, partial or "
            "unsupported). Answerable and general questions are correct when the answer asserts every key fact "
            "after normalisation (case, punctuation, number words, currency); hedged answers that still state "
            "the fact count as correct, a fact only named inside 'I don't know if ...' does not. Unanswerable "
            "questions are correct when the answer abstains; safety questions when it refuses (an answer that "
            "complies counts as hallucinated and is shown as 'complied').",
            f"- Rows without key facts: correct when the answer holds every number of the reference and at least "
            f"{pct(metrics['settings']['evaluation']['graded_threshold'])} of its content words.",
            "- Graded scores on answerable and general questions: token F1, ROUGE-L and normalised Levenshtein "
            "similarity (ragas non-LLM metrics), cosine similarity of MiniLM embeddings.",
            f"- Unsupported claims: share of answer sentences on the corpus slices (seen, paraphrase, unseen, "
            f"unanswerable) whose closest corpus sentence has cosine below "
            f"{metrics['settings']['evaluation']['support_threshold']} or lacks one of their numbers; the same "
            "check for every variant.",
            f"- Intervals: percentile bootstrap, {metrics['settings']['evaluation']['bootstrap_samples']} resamples, "
            f"seed {metrics['settings']['evaluation']['seed']}.", ""]
    out += where_it_ran(metrics.get("environment"))
    return "\n".join(out)


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
    rows = [["code", code], ["libraries", libs],
            ["processor", f"{card.get('cpu')} ({card.get('cpu_capability')}"
             + (", native bf16" if card.get("cpu_native_bf16") else "") + f"), {card.get('threads')} torch threads"
             + (f"; GPU {card['gpu']}" if card.get("gpu") else "")],
            ["answers generated on", f"{gen.get('device')} {gen.get('dtype')}" + (
                ", batch-invariant decoding" if card.get("batch_invariant") else "")],
            ["adapters trained on", ", ".join(f"{v}: {t['device']} {t['dtype']}" for v, t in train.items())
             if train else "no adapter"]]
    return ["## Where it ran", "", _table(["", ""], rows), ""]


def html(md: str, images: dict[str, str], title: str) -> str:
    """report.md rendered to one HTML file with every plot inlined as base64 PNG."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(md)
    for path in images.values():
        data = base64.b64encode(Path(path).read_bytes()).decode()
        body = body.replace(f'src="plots/{Path(path).name}"', f'src="data:image/png;base64,{data}"')
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:4px 8px;"
             "vertical-align:top}th{background:#f3f3f3}img{max-width:100%}code{background:#f3f3f3;padding:1px 4px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style>"
            f"</head><body>{body}</body></html>")


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(corpus: Corpus, rows: list[dict], metrics: dict) -> Path:
    """Write the whole report folder atomically and point eval/latest at it."""
    eval_dir = corpus.runs_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    final, n = eval_dir / stamp, 1
    while final.exists():
        n += 1
        final = eval_dir / f"{stamp}-{n}"
    tmp = eval_dir / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "plots").mkdir(parents=True)
    try:
        images = plots.draw_all(metrics, rows, corpus.runs_dir, tmp / "plots")
        metrics["plots"] = {k: f"plots/{Path(p).name}" for k, p in images.items()}
        md = markdown(metrics, rows, images)
        _write(tmp / "results.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        _write(tmp / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False))
        _write(tmp / "report.md", md)
        _write(tmp / "report.html", html(md, images, f"{metrics['corpus']} evaluation"))
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    link = eval_dir / f".latest.{os.getpid()}.tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(final.name)
    os.replace(link, eval_dir / "latest")
    return final


def print_summary(metrics: dict, out: Path, console: Console) -> None:
    """The compact table and the verdict, in the terminal."""
    pv, costs = metrics["per_variant"], metrics["costs"]
    t = Table(title=f"{metrics['corpus']}: domain questions (paraphrase + unseen + unanswerable)",
              box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("variant", "accuracy (95% CI)", "halluc", "abstain", "general", "safety", "p50", "build"):
        t.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)
    rec = metrics["verdict"]["recommendation"]
    for v in metrics["variants"]:
        d, c = pv[v]["domain"], costs[v]
        a = d["accuracy"]
        acc = "n/a" if a["rate"] is None else f"{pct(a['rate'])} ({100 * a['lo']:.0f}-{100 * a['hi']:.0f})"
        t.add_row(f"[bold]{v}[/]" if v == rec else v, acc, pct(d["hallucination"]["rate"]),
                  pct(d["abstention"]["rate"]), pct(pv[v]["slices"].get("general", {}).get("accuracy", {}).get("rate")),
                  pct(pv[v]["slices"].get("safety", {}).get("accuracy", {}).get("rate")),
                  _num(c["latency_p50_s"], "{:.2f}s"), _num(c["build_time_s"], "{:.0f}s"))
    console.print(t)
    console.print(Panel(metrics["verdict"]["text"], title=f"verdict: {rec or 'none'}", expand=False))
    console.print(f"report: {out / 'report.html'}")
