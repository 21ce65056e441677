"""Keep only the general-knowledge probes the base model answers correctly before fine-tuning.

    python evals/verify_general.py [--corpus corpora/ecostride]

The `general` slice measures forgetting, so a probe the base model already gets wrong measures
nothing. Each candidate in evals/general_candidates.jsonl is asked to the `prompted` variant of
the corpus (its system prompt) and to the bare model with no system prompt; probes scored correct
by the evaluation's own scorer under both are written to evals/general.jsonl (atomically).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from assistant.corpus.corpus import load_corpus, read_qa  # noqa: E402
from assistant.evaluation.metrics import outcome  # noqa: E402
from assistant.variants import load_variant, open_engine  # noqa: E402

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default="corpora/ecostride")
    args = ap.parse_args()
    corpus = load_corpus(args.corpus)
    items, problems = read_qa(HERE / "general_candidates.jsonl")
    assert not problems, problems
    engine = open_engine(corpus)
    prompted = load_variant("prompted", corpus, engine).answer_many([q.question for q in items], progress="prompted")
    bare = engine.generate([[{"role": "user", "content": q.question}] for q in items], progress="no system prompt")
    kept = []
    for q, a, b in zip(items, prompted, bare):
        ok = [outcome("general", x, q.key_facts) == "correct" for x in (a.text, b.text)]
        print(f"{'keep' if all(ok) else 'drop'}  {q.id}  {q.question!r}: {a.text[:70]!r} | {b.text[:70]!r}")
        if all(ok):
            kept.append(q)
    out = HERE / "general.jsonl"
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(q.model_dump(), ensure_ascii=False) + "\n" for q in kept))
    os.replace(tmp, out)
    print(f"kept {len(kept)} of {len(items)} probes in {out}")


if __name__ == "__main__":
    main()
