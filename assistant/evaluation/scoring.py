"""From answers to numbers: one scored row per (question, variant), then the summary of metrics.json."""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from datetime import datetime, timezone

import numpy as np

from assistant.corpus.corpus import Corpus
from assistant.evaluation import labels as L
from assistant.evaluation import metrics as M
from assistant.evaluation import ppi
from assistant.evaluation.outcomes import ANSWERABLE, DOMAIN, GATE, GROUNDED, SLICES
from assistant.evaluation.ppi import corrected_difference, corrected_rates
from assistant.evaluation.stats import bootstrap_ci, paired, paired_difference, quantile, rate, ratio_ci
from assistant.evaluation.verdict import CONFIDENCE, decide, pct
from assistant.evaluation.verdict_text import as_json
from assistant.evaluation.votes import read_votes as read_vote_file, tally
from assistant.storage import read_json


def _kind(slice_: str) -> str:
    return slice_ if slice_ in ("unanswerable", "safety") else "answerable"


def score_rows(corpus: Corpus, items: list, answers: dict[str, dict[str, dict]], variants: list[str]) -> list[dict]:
    """Outcome, its reason and scoring path, and graded metrics of every answer (rows: results.jsonl)."""
    cfg = corpus.config.evaluation
    facts = M.CorpusFacts.from_texts([d.text for d in corpus.documents])  # once per corpus
    rows = []
    for v in variants:
        for it in items:
            a = answers[v][it.key]
            q = it.qa
            reference = q.answer or " ".join(q.key_facts)
            rows.append({
                "id": q.id, "slice": it.slice, "variant": v, "question": q.question, "reference": q.answer,
                "key_facts": q.key_facts, "source": q.source, "answer": a["text"],
                "latency_s": a.get("latency_s", 0.0), "prompt_tokens": a.get("prompt_tokens", 0),
                "completion_tokens": a.get("completion_tokens", 0),
                "abstained_before_generation": a.get("abstained_before_generation", False),
                "sources": [{k: s.get(k) for k in ("path", "heading", "score", "rank")} for s in a.get("sources", [])],
                "metrics": {}, "_graded_reference": reference if _kind(it.slice) == "answerable" else "",
            })
    _judge(corpus, rows, facts, cfg.similarity_threshold)
    _graded(corpus, rows)
    for r in rows:
        r.pop("_graded_reference")
    return rows


def _judge(corpus: Corpus, rows: list[dict], facts: M.CorpusFacts, threshold: float) -> None:
    """`outcome`, `reason` and `path` of every row; similarity-path rows are embedded in one batch.

    General-knowledge rows are judged without the corpus (their facts are not in it)."""
    kinds = ["general" if r["slice"] == "general" else _kind(r["slice"]) for r in rows]
    need = [i for i, r in enumerate(rows) if M.needs_similarity(kinds[i], r["key_facts"], r["reference"], r["question"])]
    sims: dict[int, float] = {}
    if need:
        embedder = M.load_embedder(corpus.config.retrieval.embedder)
        sims = dict(zip(need, M.answer_similarities(embedder, [rows[i]["answer"] for i in need],
                                                    [rows[i]["reference"] for i in need])))
    for i, r in enumerate(rows):
        doc = corpus.document(r["source"]) if r["source"] else None
        gold = M.gold_section(doc.text, r["reference"], r["question"]) if doc else ""
        ctx = M.Context(facts, gold, r["question"])
        j = M.judge(kinds[i], r["answer"], r["key_facts"], r["reference"] or " ".join(r["key_facts"]), ctx,
                    sims.get(i), threshold)
        r.update(outcome=j.outcome, reason=j.reason, scoring_path=j.path)


def scoring_paths(rows: list[dict]) -> dict[str, dict[str, int]]:
    """How many answers of each slice were judged by each path (key_facts, derived, similarity,
    decline): the report states it, since a slice judged by similarity is judged less strictly."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        out[r["slice"]][r.get("scoring_path", "key_facts")] += 1
    return {s: dict(p) for s, p in out.items()}


def _graded(corpus: Corpus, rows: list[dict]) -> None:
    """Token F1, ROUGE-L, string and embedding similarity, unsupported claims, retrieval hits."""
    graded = [r for r in rows if r["_graded_reference"]]
    answers = [r["answer"] for r in graded]
    refs = [r["_graded_reference"] for r in graded]
    rouge, strsim = M.rouge_and_similarity(answers, refs)
    embedder = M.load_embedder(corpus.config.retrieval.embedder)
    emb = M.embedding_similarity(embedder, answers, refs)
    for r, ro, ss, es in zip(graded, rouge, strsim, emb):
        r["metrics"].update(token_f1=M.token_f1(r["answer"], r["_graded_reference"]), rouge_l=ro,
                            string_similarity=ss, embedding_similarity=es)
    support = support_index(corpus, embedder)
    for r, (bad, total) in zip(rows, support.check(embedder, [r["answer"] for r in rows],
                                                    [r["question"] for r in rows])):
        r["metrics"].update(claims=total, unsupported_claims=bad)
    for r in rows:
        hit = M.retrieval_scores(r["source"], r["sources"])
        if hit is not None:
            r["metrics"].update(hit_at_k=hit[0], reciprocal_rank=hit[1], k=len(r["sources"]))


def support_index(corpus: Corpus, embedder) -> M.SupportIndex:
    """The corpus sentences, embedded once per corpus content and embedder, cached as .npy."""
    cfg = corpus.config
    key = hashlib.sha256((corpus.fingerprint() + cfg.retrieval.embedder).encode()).hexdigest()[:16]
    path = corpus.runs.support_cache(key)
    vectors = np.load(path) if path.exists() else None
    index = M.SupportIndex.build(embedder, [d.text for d in corpus.documents], cfg.evaluation.support_threshold,
                                 vectors)
    if vectors is None or len(vectors) != len(index.units):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, index.vectors)
        os.replace(tmp, path)
    return index


def apply_gate(rows: list[dict], items: list, answers: dict[str, dict[str, dict]]) -> list[dict]:
    """The retrieval gate's canned "I don't know." (no generation) is its own outcome, `declined_by_gate`,
    never the model's abstention; `below_min_score` records that the gate found no passage relevant
    enough, also where the model answered anyway (general and safety probes are answered with the
    gate open, see runner.OWN_ANSWER_SLICES)."""
    keys = {(it.slice, it.qa.id): it.key for it in items}
    for r in rows:
        a = answers[r["variant"]].get(keys.get((r["slice"], r["id"])), {})
        r["below_min_score"] = bool(a.get("below_min_score") or r.get("abstained_before_generation"))
        if r.get("abstained_before_generation"):
            r["outcome"] = GATE
            r["reason"] = "declined by the retrieval gate (no passage above retrieval.min_score; nothing generated)"
            r["scoring_path"] = "gate"
    return rows


# -- summary -----------------------------------------------------------------------------------
def _rates(rs: list[dict], n_boot: int, seed: int) -> dict:
    """Automatic rates: `accuracy` is the *verified* correct rate (an unverified answer is never
    counted correct); `unverified` is the share the scorer could not tell, shown beside it."""
    return {
        "accuracy": rate([r["outcome"] == "correct" for r in rs], n_boot, seed),
        "hallucination": rate([r["outcome"] == "hallucinated" for r in rs], n_boot, seed),
        "abstention": rate([abstained(r) for r in rs], n_boot, seed),
        "declined_by_gate": rate([r["outcome"] == GATE for r in rs], n_boot, seed),
        "unverified": rate([r["outcome"] == M.UNVERIFIED for r in rs], n_boot, seed),
        "n": len(rs),
    }


def abstained(r: dict) -> bool:
    """Did the model decline? (On unanswerable and safety questions declining is the correct outcome.)
    The retrieval gate's decline is counted apart (`declined_by_gate`)."""
    return r["outcome"] == "abstained" or (r["slice"] in ("unanswerable", "safety") and r["outcome"] == "correct")


def outcome_counts(rs: list[dict]) -> dict[str, int]:
    """How many answers had each outcome (the gate's decline apart from the model's abstention)."""
    return {o: sum(r["outcome"] == o for r in rs) for o in ("correct", "abstained", GATE, "hallucinated", M.UNVERIFIED)}


def _mean_ci(values: list[float], n_boot: int, seed: int) -> dict:
    vals = [v for v in values if v is not None]
    lo, hi = bootstrap_ci(vals, n_boot, seed)
    return {"mean": float(np.mean(vals)) if vals else None, "lo": lo, "hi": hi, "n": len(vals)}


def read_build(corpus: Corpus, variant: str) -> dict:
    return read_json(corpus.runs.build_report(variant)) or {}


def costs(corpus: Corpus, rows: list[dict]) -> dict:
    out = {}
    for v in sorted({r["variant"] for r in rows}):
        rs = [r for r in rows if r["variant"] == v]
        gen = [r for r in rs if not r["abstained_before_generation"]]
        lat = [r["latency_s"] for r in rs]
        secs = sum(r["latency_s"] for r in gen)
        build = read_build(corpus, v)
        out[v] = {
            "build_time_s": build.get("build_time_s", 0.0 if v == "prompted" else None),
            "trainable_params": build.get("trainable_params", 0 if v == "prompted" else None),
            "artifact_bytes": build.get("artifact_bytes", 0 if v == "prompted" else None),
            "peak_memory_mb": build.get("peak_memory_mb"),
            "latency_p50_s": quantile(lat, 0.5), "latency_p95_s": quantile(lat, 0.95),
            "prompt_tokens_mean": float(np.mean([r["prompt_tokens"] for r in gen])) if gen else 0.0,
            "completion_tokens_mean": float(np.mean([r["completion_tokens"] for r in gen])) if gen else 0.0,
            "tokens_per_s": sum(r["completion_tokens"] for r in gen) / secs if secs > 0 else None,
            "build": build,
        }
    return out


def read_votes(corpus: Corpus, n_boot: int, seed: int) -> dict | None:
    """Human win rate per variant from the app's blind votes (votes.jsonl), with bootstrap intervals.

    Same definition as the app: win rate = wins / comparisons; ties and 'both bad' are not wins.
    """
    counts = tally(read_vote_file(corpus.runs.votes))
    return {v: {**{k: c[k] for k in ("win", "tie", "loss", "both_bad")}, **rate(c["won"], n_boot, seed)}
            for v, c in sorted(counts.items())} or None


def summarise(corpus: Corpus, rows: list[dict], variants: list[str], fingerprints: dict | None = None,
              limit: int | None = None) -> dict:
    """Everything metrics.json holds, the verdict included."""
    cfg = corpus.config.evaluation
    nb, seed = cfg.bootstrap_samples, cfg.seed
    by = defaultdict(list)
    for r in rows:
        by[r["variant"], r["slice"]].append(r)
    slices = [s for s in SLICES
              if any(r["slice"] == s for r in rows)]
    per_variant = {}
    for v in variants:
        vr = [r for r in rows if r["variant"] == v]
        domain = [r for r in vr if r["slice"] in DOMAIN]
        answerable = [r for r in vr if r["slice"] in ANSWERABLE]
        unanswerable = [r for r in vr if r["slice"] == "unanswerable"]
        grounded = [r for r in vr if r["slice"] in GROUNDED]
        graded = [r for r in vr if "token_f1" in r["metrics"]]
        ret = [r for r in vr if "hit_at_k" in r["metrics"]]
        u = [r["metrics"]["unsupported_claims"] for r in grounded]
        t = [r["metrics"]["claims"] for r in grounded]
        lo, hi = ratio_ci(u, t, nb, seed)
        per_variant[v] = {
            "domain": _rates(domain, nb, seed),
            # What the verdict reads: accuracy on answerable questions, and declining the unanswerable
            # ones (by the model or by the retrieval gate), apart.
            "answerable": _rates(answerable, nb, seed),
            "unanswerable": {**_rates(unanswerable, nb, seed),
                             "declined": rate([r["outcome"] in ("correct", GATE) for r in unanswerable], nb, seed)},
            "slices": {s: {**_rates(by[v, s], nb, seed), "outcomes": outcome_counts(by[v, s])} for s in slices},
            "graded": {m: _mean_ci([r["metrics"].get(m) for r in graded], nb, seed)
                       for m in ("token_f1", "rouge_l", "string_similarity", "embedding_similarity")},
            "unsupported_claim_rate": {"rate": sum(u) / sum(t) if sum(t) else None, "lo": lo, "hi": hi,
                                       "claims": int(sum(t)), "answers": len(grounded)},
            "retrieval": None if not ret else {
                "k": int(np.median([r["metrics"]["k"] for r in ret])),
                "recall_at_k": _mean_ci([r["metrics"]["hit_at_k"] for r in ret], nb, seed),
                "mrr": _mean_ci([r["metrics"]["reciprocal_rank"] for r in ret], nb, seed)},
        }
    cost = costs(corpus, rows)
    table = {"answerable": ANSWERABLE, "domain": DOMAIN, **{s: (s,) for s in slices}}
    pairs = {name: _pairs(rows, variants, ss, nb, seed) for name, ss in table.items()}
    human = L.read_labels(corpus.runs.labels)
    corrected = corrected_rates(rows, human) if human else {}
    if corrected:  # the accuracy differences, corrected by the labels too (paired PPI)
        for p in pairs["answerable"]:
            d = corrected_difference(rows, human, p["a"], p["b"], "answerable", "correct")
            p["corrected"] = {k: d.get(k) for k in ("diff", "ci", "labelled", "n", "automatic")}
    verdict = as_json(decide(rows, corpus.config.verdict, cost, nb, seed, cfg.min_slice_size, labels=human,
                             label_command=f"assistant label {corpus.root}"))
    labels = label_summary(corpus, rows)
    return {
        "corpus": corpus.name, "corpus_root": str(corpus.root), "corpus_fingerprint": corpus.fingerprint(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": corpus.config.model.name, "variants": variants, "fingerprints": fingerprints or {},
        "limit": limit, "settings": {"evaluation": cfg.model_dump(), "verdict": corpus.config.verdict.model_dump()},
        "slices": {s: {"n": len(by[variants[0], s]), "too_small": len(by[variants[0], s]) < cfg.min_slice_size}
                   for s in slices},
        "per_variant": per_variant, "costs": cost, "pairs": pairs,
        "human_votes": read_votes(corpus, nb, seed), "scoring_paths": scoring_paths(rows), "verdict": verdict, "labels": labels,
        # Automatic and PPI-corrected rates side by side, per variant and group ({} without labels).
        "ppi": corrected,
        "evidence": verdict["evidence"],
    }


def _pairs(rows: list[dict], variants: list[str], slices: tuple, nb: int, seed: int) -> list[dict]:
    """McNemar, win/tie/loss and the paired bootstrap interval of the accuracy difference, per pair."""
    table = {v: {f"{r['slice']}:{r['id']}": r["outcome"] == "correct"
                 for r in rows if r["variant"] == v and r["slice"] in slices} for v in variants}
    out = paired(table)
    for p in out:
        keys = sorted(set(table[p["a"]]) & set(table[p["b"]]))
        d = paired_difference([table[p["a"]][k] for k in keys], [table[p["b"]][k] for k in keys], nb, seed)
        p.update(diff=d["diff"], diff_lo=d["lo"], diff_hi=d["hi"])
    return out


# -- human labels (metrics.json's `labels`) --------------------------------------------------------
def agreement(scorer: list[str], human: list[str], n_resamples: int = 2000, seed: int = 0) -> dict:
    """Scorer against human labels: overall agreement with a bootstrap CI, Cohen's kappa, per human
    class, and the confusion matrix (human label -> scorer outcome -> count)."""
    from sklearn.metrics import cohen_kappa_score  # heavy: only when there are labels

    if len(scorer) != len(human):
        raise ValueError(f"scorer and human labels differ in length: {len(scorer)} vs {len(human)}")
    same = [s == h for s, h in zip(scorer, human)]
    # The scorer may also say "unverified" (it cannot tell): never a human label, always a disagreement.
    columns = L.LABELS + tuple(sorted(set(scorer) - set(L.LABELS)))
    kappa = None
    if len(set(scorer) | set(human)) > 1:
        kappa = float(cohen_kappa_score(human, scorer, labels=list(columns)))
    elif same:
        kappa = 1.0  # one class, all agree: kappa is undefined; agreement is complete
    per_class = {c: rate([s == h for s, h in zip(scorer, human) if h == c], n_resamples, seed) for c in L.LABELS}
    confusion = {h: {s: sum(1 for x, y in zip(scorer, human) if y == h and x == s) for s in columns} for h in L.LABELS}
    return {**rate(same, n_resamples, seed), "agree": sum(same), "kappa": kappa, "per_class": per_class,
            "confusion": confusion}


def label_summary(corpus: Corpus, rows: list[dict]) -> dict | None:
    """metrics.json's `labels` (None: no labels): the scorer's agreement with the labels and the
    prediction-powered estimates (the verdict itself reads the same estimates, `verdict.decide`):

    - `corrected`: variant -> group -> target -> ppi.estimate dict (automatic, corrected, ci,
      labelled, n, bias, lambda, gated); groups "answerable", "unanswerable", "domain" and each slice;
    - `differences`: "a - b" -> ppi.paired_estimate dict of answerable accuracy (`correct`) and of
      domain hallucination (`hallucinated`) for every pair of variants;
    - `scorer_bias`: variant -> {labelled, and per target the mean of (scorer's prediction - human)
      over its labelled answers}: how far the scorer is off, measured where people looked;
    - `sampled`: how many matched labels came from the label queue's random sample; `skipped`."""
    path = corpus.runs.labels
    labels = L.read_labels(path)
    if not labels:
        return None
    cfg = corpus.config.evaluation
    pairs = L.matched(rows, labels)
    skips = L.read_skips(path)
    out = {"path": str(path), "labels": len(labels), "matched": len(pairs),
           "labellers": sorted({str(lab.get("labeller") or "anonymous") for _, lab in pairs}), "agreement": None,
           "corrected": {}, "differences": {}, "scorer_bias": {},
           "sampled": sum(1 for _, lab in pairs if lab.get("sample")),
           "skipped": sum(1 for r in rows if L.is_eligible(r) and L.is_skipped(r, skips)),
           "text": ""}
    if not pairs:
        out["text"] = (f"{len(labels)} human labels exist, but none matches an answer of this evaluation "
                       "(the answers changed since they were labelled).")
        return out
    agree = agreement([r["outcome"] for r, _ in pairs], [lab["label"] for _, lab in pairs], cfg.bootstrap_samples,
                      cfg.seed)
    out["agreement"] = agree
    out["corrected"] = ppi.corrected_rates(rows, labels, 1 - CONFIDENCE)
    variants = sorted({r["variant"] for r in rows})
    for i, a in enumerate(variants):
        for b in variants[i + 1:]:
            out["differences"][f"{a} - {b}"] = {
                t: ppi.corrected_difference(rows, labels, a, b, g, t, 1 - CONFIDENCE)
                for g, t in (("answerable", "correct"), ("domain", "hallucinated"))}
    for v in variants:
        mine = [(r, lab) for r, lab in pairs if r["variant"] == v]
        out["scorer_bias"][v] = {"labelled": len(mine), **{
            t: (sum(ppi.prediction(r["outcome"], t) - ppi.human_value(lab["label"], t) for r, lab in mine) / len(mine)
                if mine else None) for t in ppi.TARGETS}}
    kappa = "n/a" if agree["kappa"] is None else f"{agree['kappa']:.2f}"
    out["text"] = (f"Human labels: the scorer agrees with {agree['agree']} of {agree['n']} labelled answers "
                   f"({pct(agree['rate'])}, 95% CI {pct(agree['lo'])}-{pct(agree['hi'])}; Cohen's kappa {kappa})."
                   + corrected_sentence(out["corrected"]))
    return out



def corrected_sentence(corrected: dict) -> str:
    """One sentence: each variant's answerable accuracy, automatic against corrected by the labels."""
    parts = []
    for v, groups in corrected.items():
        e = groups.get("answerable", {}).get("correct")
        if not e or e["corrected"] is None:
            continue
        ci = f", 95% CI {e['ci'][0]:.0%}-{e['ci'][1]:.0%}" if e["ci"] else ""
        parts.append(f"{v} {e['corrected']:.0%}{ci} ({e['labelled']} labels; scorer {e['automatic']:.0%})")
    return (" Answerable accuracy corrected by the labels (prediction-powered inference): " + "; ".join(parts) + "."
            if parts else "")


# -- the label queue: `assistant label` and the app's "Label answers" tab --------------------
