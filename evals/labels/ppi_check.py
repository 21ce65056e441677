"""Does the PPI-corrected rate cover the human rate? A check on real labelled answers.

Run: python evals/labels/ppi_check.py corpora/python-faq [--fraction 0.5] [--repeats 200]

Takes the real (non-probe) answerable answers of the corpus in `labelled.jsonl`, scores them with
the tool's scorer (`assistant.evaluation.external`, the code behind `assistant score`), then, for
each of `repeats` seeded draws, hides the labels of all but a uniformly random `fraction` and
computes the corrected rates with `ppi.estimate`. Prints, per outcome, the human rate over all
rows, the automatic rate, and how often the 95% interval contained the human rate, with the median
interval width.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

from assistant.corpus.corpus import load_corpus
from assistant.evaluation import ppi
from assistant.evaluation.external import score_answers

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus")
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    corpus = load_corpus(args.corpus)
    labelled = [json.loads(line) for line in open(HERE / "labelled.jsonl", encoding="utf-8")]
    real = [r for r in labelled if r["corpus"] == corpus.name and r.get("probe_kind") == "real"
            and r["kind"] == "answerable"]
    rows = [{"id": r["id"], "question": r["question"], "answer": r["answer"], "kind": r["kind"],
             "reference": r.get("reference", ""), "key_facts": r.get("key_facts", []), "source": r.get("source", "")}
            for r in real]
    scored = score_answers(corpus, rows)
    human = [r["label"] for r in real]
    n = len(rows)
    print(f"{corpus.name}: {n} real answerable answers labelled by people; labels shown to PPI: "
          f"{args.fraction:.0%} of them, {args.repeats} seeded draws")
    for target in ppi.TARGETS:
        auto = [ppi.prediction(s["outcome"], target) for s in scored]
        truth = [ppi.human_value(h, target) for h in human]
        rate = sum(truth) / n
        covered, widths = 0, []
        for seed in range(args.repeats):
            pick = random.Random(seed).sample(range(n), round(args.fraction * n))
            e = ppi.estimate(auto, [auto[i] for i in pick], [truth[i] for i in pick])
            covered += e["ci"][0] <= rate <= e["ci"][1]
            widths.append(e["ci"][1] - e["ci"][0])
        print(f"  {target:<12} human {rate:6.1%}  automatic {sum(auto) / n:6.1%}  "
              f"interval holds the human rate in {covered}/{args.repeats} ({covered / args.repeats:.0%}), "
              f"median width {statistics.median(widths):.1%}")


if __name__ == "__main__":
    main()
