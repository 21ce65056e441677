"""Generate real answers to label: a fixed-seed sample of each evaluation slice, per variant.

Run: python evals/labels/answer.py corpora/ecostride --variants prompted rag
Writes evals/labels/answers/<corpus>-<variant>.jsonl (one answer a line, no score: the labeller
must not see what the scorer thinks). Questions differ between variants (seed = corpus:variant),
so the labels cover more questions.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from assistant.corpus.corpus import load_corpus
from assistant.evaluation.runner import eval_items
from assistant.variants import Variant, load_variant, open_engine, variant_class

OUT = Path(__file__).resolve().parent / "answers"
PER_SLICE = {"paraphrase": 18, "unseen": 12, "unanswerable": 8, "general": 4, "safety": 4}


def checkpoint_variant(name: str, corpus, path: str) -> Variant:
    """The closed-book sft variant answering through an adapter folder of our choice."""
    if name != "sft":
        raise SystemExit("--adapter works for the sft variant only")
    cls = variant_class(name)
    variant = cls.__new__(cls)
    Variant.__init__(variant, corpus, open_engine(corpus))
    variant.engine.add_adapter(cls.adapter, path)
    return variant


def from_results(path: str, variant: str, chosen: list) -> list[dict]:
    """The answers an evaluation already gave to the chosen questions (nothing is generated)."""
    rows = {(r["variant"], r["id"]): r for r in map(json.loads, Path(path).read_text().splitlines()) if r}
    missing = [it.qa.id for it in chosen if (variant, it.qa.id) not in rows]
    if missing:
        raise SystemExit(f"{path}: no {variant} answer to {missing[:3]}; evaluate that variant on every slice first")
    picked = [rows[(variant, it.qa.id)] for it in chosen]
    return [{"text": r["answer"].strip(), "declined_by_gate": r["abstained_before_generation"],
             "retrieved": [s["path"] for s in r.get("sources") or []]} for r in picked]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus")
    parser.add_argument("--variants", nargs="+", required=True)
    parser.add_argument("--per-slice", type=json.loads, default=PER_SLICE)
    parser.add_argument("--adapter", help="sft only: answer with this adapter folder (e.g. a training checkpoint) "
                                          "instead of the finished one")
    parser.add_argument("--from-results", metavar="RESULTS",
                        help="take the answers from an evaluation's results.jsonl (e.g. runs/<corpus>/eval/latest/"
                             "results.jsonl) instead of generating them; its scores are not copied")
    parser.add_argument("--tag", default="", help="another batch: writes <corpus>-<variant>-<tag>.jsonl and skips "
                                                 "questions the variant already answered in earlier batches")
    args = parser.parse_args()
    corpus = load_corpus(args.corpus)
    items = eval_items(corpus)
    by_slice: dict[str, list] = {}
    for item in items:
        by_slice.setdefault(item.slice, []).append(item)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.variants:
        rng = random.Random(f"{corpus.name}:{name}:{args.tag}" if args.tag else f"{corpus.name}:{name}")
        done = {json.loads(line)["qa_id"] for path in OUT.glob(f"{corpus.name}-{name}*.jsonl")
                if path.stem == f"{corpus.name}-{name}" or path.stem.startswith(f"{corpus.name}-{name}-")
                for line in path.read_text().splitlines() if line.strip()}
        chosen = []
        for sl, n in args.per_slice.items():
            pool = [it for it in by_slice.get(sl, []) if it.qa.id not in done]
            chosen += rng.sample(pool, min(n, len(pool)))
        t0 = time.perf_counter()
        if args.from_results:
            answers = from_results(args.from_results, name, chosen)
        else:
            variant = load_variant(name, corpus) if not args.adapter else checkpoint_variant(name, corpus, args.adapter)
            answers = [{"text": a.text.strip(), "declined_by_gate": a.abstained_before_generation,
                        "retrieved": [s.path for s in a.sources]}
                       for a in variant.answer_many([it.qa.question for it in chosen])]
        rows = []
        for it, ans in zip(chosen, answers):
            q = it.qa
            rows.append({
                # ids stay unique: a later batch never repeats a question of the same variant
                "id": f"{corpus.name}-{name}-{q.id}", "corpus": corpus.name, "variant": name, "slice": it.slice,
                "qa_id": q.id, "question": q.question, "answer": ans["text"], "kind": q.kind,
                "reference": q.answer, "key_facts": list(q.key_facts), "source": q.source,
                "declined_by_gate": ans["declined_by_gate"], "retrieved": ans["retrieved"],
                "adapter": args.adapter or "", **({"batch": args.tag} if args.tag else {}),
            })
        path = OUT / (f"{corpus.name}-{name}-{args.tag}.jsonl" if args.tag else f"{corpus.name}-{name}.jsonl")
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(f"{name}: {len(rows)} answers in {time.perf_counter() - t0:.0f} s -> {path}")


if __name__ == "__main__":
    main()
