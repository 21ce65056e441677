"""`assistant VERB ...`: one verb, one function.

Every user-facing failure (bad corpus, bad config, missing model, variant not built) exits with
code 2 and one line per problem, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import EXIT_INTERRUPTED, AssistantError, UsageError
from .runtime import quiet_libraries

DEFAULT_CORPUS = "corpora/ecostride"


def _corpus(path: str):
    from .corpus import load_corpus

    return load_corpus(path)


# -- verbs ------------------------------------------------------------------------------------
def cmd_check(args) -> int:
    from .checks import check_corpus

    return check_corpus(Path(args.corpus), strict=args.strict, near_duplicate=args.near_duplicate)


def cmd_ask(args) -> int:
    from .variants import load_variant

    corpus = _corpus(args.corpus)
    limit = corpus.config.generation.max_question_chars
    if len(args.question) > limit:
        raise UsageError(f"question is {len(args.question)} characters, over the limit of {limit}; shorten it "
                         "or raise generation.max_question_chars in corpus.yaml")
    answer = load_variant(args.variant, corpus).answer(args.question)
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print(answer.text)
    for s in answer.sources:
        heading = f" > {s.heading}" if s.heading else ""
        print(f"  [{s.rank}] {s.path}{heading}  (score {s.score:.3f})")
    print(f"-- {args.variant}: {answer.latency_s:.2f} s, {answer.prompt_tokens} prompt + "
          f"{answer.completion_tokens} answer tokens", file=sys.stderr)
    return 0


def cmd_build(args) -> int:
    from .build import build_variants

    corpus = _corpus(args.corpus)
    build_variants(corpus, [args.variant] if args.variant else None, force=args.force)
    return 0


def cmd_eval(args) -> int:
    from .evaluation.runner import evaluate

    corpus = _corpus(args.corpus)
    evaluate(corpus, variants=args.variants, limit=args.limit)
    return 0


def cmd_compare(args) -> int:
    from .evaluation.runner import compare

    compare(_corpus(args.corpus), variants=args.variants, limit=args.limit)
    return 0


def cmd_retrieval(args) -> int:
    from .retrieval import report_retrieval

    report_retrieval(_corpus(args.corpus), k=args.k, split=args.split)
    return 0


def cmd_app(args) -> int:
    from .app import launch

    launch(args.corpus, host=args.host, port=args.port, share=args.share)
    return 0


def cmd_import(args) -> int:
    from .importers import run_import

    run_import(args)
    return 0


def cmd_score(args) -> int:
    from .evaluation.external import run_score

    answers = Path(args.answers)
    if not answers.is_file():
        raise UsageError(f"{answers}: no such file; give a JSONL file of answers (id, question, answer)")
    run_score(answers, _corpus(args.corpus), Path(args.out) if args.out else None)
    return 0


def parser() -> argparse.ArgumentParser:
    from .config import VARIANTS

    p = argparse.ArgumentParser(
        prog="assistant",
        description="Prompt, RAG or fine-tune? Build every variant from one corpus, compare them head "
                    "to head, and get a recommendation backed by numbers.")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name, fn, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    sp = verb("compare", cmd_compare, "build what is missing or stale, evaluate every variant, write the report")
    sp.add_argument("corpus", nargs="?", default=DEFAULT_CORPUS)
    sp.add_argument("--variants", nargs="+", choices=VARIANTS, default=None)
    sp.add_argument("--limit", type=int, default=None, help="evaluate at most N questions per slice")

    sp = verb("build", cmd_build, "build one or all variants (FAISS index, LoRA adapters)")
    sp.add_argument("corpus")
    sp.add_argument("--variant", choices=VARIANTS, default=None)
    sp.add_argument("--force", action="store_true", help="rebuild even when up to date")

    sp = verb("ask", cmd_ask, "ask one variant one question")
    sp.add_argument("corpus")
    sp.add_argument("question")
    sp.add_argument("--variant", choices=VARIANTS, default="prompted")
    sp.add_argument("--json", action="store_true", help="print the answer, sources and timings as JSON")

    sp = verb("eval", cmd_eval, "evaluate built variants on the test split")
    sp.add_argument("corpus", nargs="?", default=DEFAULT_CORPUS)
    sp.add_argument("--variants", nargs="+", choices=VARIANTS, default=None)
    sp.add_argument("--limit", type=int, default=None, help="evaluate at most N questions per slice")

    sp = verb("check", cmd_check, "validate a corpus and its QA set (exit 2 when invalid)")
    sp.add_argument("corpus")
    sp.add_argument("--strict", action="store_true", help="treat review warnings as errors")
    sp.add_argument("--near-duplicate", type=float, default=0.95, metavar="COSINE",
                    help="flag test questions this similar to a train question (default 0.95)")

    sp = verb("retrieval", cmd_retrieval, "report retrieval recall@k and MRR of the gold documents")
    sp.add_argument("corpus")
    sp.add_argument("-k", type=int, default=None, help="passages retrieved (default: retrieval.top_k)")
    sp.add_argument("--split", default="test", choices=["train", "val", "test", "all"])

    sp = verb("app", cmd_app, "open the side-by-side Gradio chat over the built variants")
    sp.add_argument("corpus", nargs="?", default=DEFAULT_CORPUS)
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=7860)
    sp.add_argument("--share", action="store_true", help="create a public Gradio link (off by default)")

    sp = verb("score", cmd_score, "score answers from any system (JSONL: id, question, answer[, kind, reference, "
                                  "key_facts, label]) with the same scorer; prints rates and agreement with labels")
    sp.add_argument("answers", help="JSONL file, one answer a line")
    sp.add_argument("--corpus", default=DEFAULT_CORPUS, help="the corpus the answers are about (default: %(default)s)")
    sp.add_argument("--out", help="write every row plus outcome, reason and scoring_path to this JSONL file")

    sp = verb("import", cmd_import, "create a corpus folder from existing documents and QA (JSONL, CSV, SQuAD)")
    sp.add_argument("source", help="a QA file (.jsonl, .csv) or a SQuAD-format .json")
    sp.add_argument("out", help="the corpus folder to write")
    sp.add_argument("--docs", help="folder of documents to copy into docs/ (JSONL/CSV imports)")
    sp.add_argument("--name", help="corpus name (default: the folder's name)")
    sp.add_argument("--test-fraction", type=float, default=0.2,
                    help="share of facts held out for testing when the input has no split (default 0.2)")
    sp.add_argument("--val-fraction", type=float, default=0.1,
                    help="share of facts for validation when the input has no split (default 0.1)")
    sp.add_argument("--force", action="store_true", help="overwrite an existing corpus folder")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    quiet_libraries()
    try:
        return args.fn(args) or 0
    except AssistantError as e:
        for line in e.lines():
            print(f"error: {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; finished artifacts are kept and the next run resumes", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
