"""`assistant VERB ...`: one verb, one function.

Every user-facing failure (bad corpus, bad config, missing model, variant not built) exits with
code 2 and one line per problem, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from assistant.errors import EXIT_INTERRUPTED, AssistantError, UsageError
from assistant.runtime import quiet_libraries

DEFAULT_CORPUS = "corpora/ecostride"


def _corpus(path: str):
    from assistant.corpus.corpus import load_corpus

    return load_corpus(path)


# -- verbs ------------------------------------------------------------------------------------
def cmd_check(args) -> int:
    from assistant.checks import check_corpus

    return check_corpus(Path(args.corpus), strict=args.strict, near_duplicate=args.near_duplicate)


def cmd_ask(args) -> int:
    from assistant.variants import load_variant

    if not args.question.strip():
        raise UsageError("empty question; pass the question as text, e.g. assistant ask CORPUS \"How long ...?\"")
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
        print(f"  [{s.rank}] {s.citation()}{heading}  (score {s.score:.3f})")
    print(f"-- {args.variant}: {answer.latency_s:.2f} s, {answer.prompt_tokens} prompt + "
          f"{answer.completion_tokens} answer tokens", file=sys.stderr)
    max_new = corpus.config.generation.max_new_tokens
    if answer.completion_tokens >= max_new:
        print(f"-- cut off at generation.max_new_tokens={max_new}; raise it in corpus.yaml for the whole answer",
              file=sys.stderr)
    return 0


def cmd_build(args) -> int:
    from assistant.variants.build import build_variants

    corpus = _corpus(args.corpus)
    build_variants(corpus, [args.variant] if args.variant else None, force=args.force)
    return 0


def cmd_eval(args) -> int:
    from assistant.evaluation.runner import evaluate

    corpus = _corpus(args.corpus)
    if args.judge:
        _judge_overrides(corpus, args)
    evaluate(corpus, variants=args.variants, limit=args.limit, judge=args.judge)
    return 0


def _judge_overrides(corpus, args) -> None:
    """--judge-url / --judge-model over corpus.yaml's judge: section (shared by eval and score)."""
    cfg = corpus.config.judge
    corpus.config.judge = cfg.model_copy(update={k: v for k, v in (("base_url", args.judge_url),
                                                                   ("model", args.judge_model)) if v})


def add_judge_flags(sp) -> None:
    sp.add_argument("--judge", action="store_true",
                    help="also grade every answer with the LLM judge of corpus.yaml's judge: section")
    sp.add_argument("--judge-url", default=None, help="the judge's OpenAI-compatible /v1 URL (overrides judge.base_url)")
    sp.add_argument("--judge-model", default=None, help="the judge's model id (overrides judge.model)")


def cmd_compare(args) -> int:
    from assistant.evaluation.runner import compare

    corpus = _corpus(args.corpus)
    if args.judge:
        _judge_overrides(corpus, args)
    compare(corpus, variants=args.variants, limit=args.limit, judge=args.judge, first_verdict=args.first_verdict)
    return 0


def cmd_retrieval(args) -> int:
    from assistant.variants.retrieval import report_retrieval

    if args.k is not None and args.k < 1:
        raise UsageError(f"-k must be at least 1 (passages retrieved), got {args.k}")
    report_retrieval(_corpus(args.corpus), k=args.k, split=args.split)
    return 0


def cmd_app(args) -> int:
    from assistant.serve.app import launch

    launch(args.corpus, host=args.host, port=args.port, share=args.share, allow_remote=args.allow_remote,
           auth=args.auth, allow_eval=args.allow_eval)
    return 0


def cmd_serve(args) -> int:
    from assistant.serve.api import Limits, serve

    limits = Limits(max_tokens=args.max_tokens, max_queue=args.max_queue, max_batch=args.max_batch,
                    max_question_chars=args.max_question_chars,
                    **({} if args.max_body_bytes is None else {"max_body_bytes": args.max_body_bytes}))
    serve(_corpus(args.corpus), host=args.host, port=args.port, api_key=args.api_key, limits=limits)
    return 0


def cmd_import(args) -> int:
    from assistant.corpus.importers import run_import

    run_import(args)
    return 0


def cmd_questions(args) -> int:
    from assistant.corpus.corpus import load_corpus
    from assistant.evaluation.questions import REASONS, run_questions

    if args.augment < 0:
        raise UsageError(f"--augment must be 0 or more, got {args.augment}")
    # A folder of documents without qa.jsonl is the normal starting point here.
    corpus = load_corpus(args.corpus)
    r = run_questions(corpus, out=args.out, force=args.force, augment_n=args.augment, augment_only=args.augment_only)
    made, kept = sum(r["generated"].values()), sum(r["kept"].values())
    print(f"generator {r['generator']}: {made} generated, {kept} kept ({100 * r['kept_share']:.0f}%)")
    for reason in REASONS:
        if r["dropped"].get(reason):
            print(f"  dropped {r['dropped'][reason]:>5}  {reason}")
    print("  kept: " + ", ".join(f"{k} {v}" for k, v in sorted(r["splits"].items())))
    print(f"wrote {r['written']} and the review sheet {r['review_sheet']} (edit it, then: assistant import "
          f"{r['review_sheet']} OUT --docs {Path(args.corpus) / 'docs'})")
    written = Path(r["written"]).resolve()
    if written.parent == corpus.root.resolve() and written != corpus.qa_path.resolve():
        print(f"to build and evaluate with it, set `qa_file: {written.name}` in {corpus.root / 'corpus.yaml'}")


def cmd_score(args) -> int:
    from assistant.evaluation.external import run_score

    answers = Path(args.answers)
    if not answers.is_file():
        raise UsageError(f"{answers}: no such file; give a JSONL file of answers (id, question, answer)")
    corpus = _corpus(args.corpus)
    if args.judge:
        _judge_overrides(corpus, args)
    run_score(answers, corpus, Path(args.out) if args.out else None, judge=args.judge,
              summary_path=Path(args.summary) if args.summary else None)
    return 0


def cmd_export(args) -> int:
    from assistant.variants.export import export, summary

    print(summary(export(_corpus(args.corpus), args.variant, Path(args.to))))
    return 0


def cmd_label(args) -> int:
    import os

    from assistant.evaluation.labels import label_queue, terminal_keys

    if args.n < 1:
        raise UsageError(f"--n must be a positive number of answers, got {args.n}; e.g. --n 60")
    corpus = _corpus(args.corpus)
    keys = terminal_keys(sys.stdin)
    try:
        got = label_queue(corpus, keys, sys.stdout, n=args.n, seed=args.seed,
                          labeller=args.labeller or os.environ.get("USER", ""))
    finally:
        keys.close()  # gives the terminal its normal mode back
    print(f"{got['done']} of {got['total']} sampled answers labelled, {got['left']} to go, in {got['path']}.")
    if got["left"]:
        print(f"to resume: assistant label {args.corpus} --n {args.n}" + (f" --seed {args.seed}" if args.seed is not
                                                                           None else ""))
    print(f"the next `assistant eval {args.corpus}` corrects its rates with these labels (docs/labelling.md)")
    return 0


def parser() -> argparse.ArgumentParser:
    from assistant.config import VARIANTS

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
    sp.add_argument("--no-first-verdict", dest="first_verdict", action="store_false",
                    help="do not evaluate the other variants before training the fine-tunes that need it "
                         "(by default their report and verdict come first: on the demo 12 minutes in, for one more scoring, 44 s)")
    add_judge_flags(sp)

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
    add_judge_flags(sp)

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
    sp.add_argument("--host", default=None, help="address to bind (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    sp.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    sp.add_argument("--allow-remote", action="store_true",
                    help="allow a --host other than this machine (prints a warning; pair it with --auth)")
    sp.add_argument("--auth", metavar="USER:PASS", default=None, help="require this login (Gradio auth)")
    sp.add_argument("--allow-eval", action="store_true",
                    help="show the 'Run the evaluation now' button (off: visitors cannot start an evaluation)")
    sp.add_argument("--share", action="store_true",
                    help="create a public Gradio link (off by default; implies --allow-remote)")

    sp = verb("serve", cmd_serve, "serve the built variants over an OpenAI-compatible API (/v1/chat/completions)")
    sp.add_argument("corpus", nargs="?", default=DEFAULT_CORPUS)
    sp.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sp.add_argument("--port", type=int, default=8000)
    sp.add_argument("--api-key", default=None,
                    help="require 'Authorization: Bearer KEY' (default: $ASSISTANT_API_KEY, else no key)")
    sp.add_argument("--max-batch", type=int, default=None,
                    help="requests decoded together (default: generation.batch_size)")
    sp.add_argument("--max-queue", type=int, default=64, help="requests waiting for a batch; more get 429")
    sp.add_argument("--max-tokens", type=int, default=1024, help="largest max_tokens a request may ask for")
    sp.add_argument("--max-question-chars", type=int, default=None,
                    help="longest last user message (default: generation.max_question_chars)")
    sp.add_argument("--max-body-bytes", type=int, default=None,
                    help="largest request body; larger ones get 413 before they are read (default 1 MiB)")

    sp = verb("questions", cmd_questions, "generate a validated question set (qa.jsonl) from the documents")
    sp.add_argument("corpus")
    sp.add_argument("--out", default=None, help="QA file to write (default: qa.jsonl when the corpus has none or "
                                                "a generated one, else qa.generated.jsonl beside it)")
    sp.add_argument("--force", action="store_true", help="overwrite a hand-written QA file")
    sp.add_argument("--augment", type=int, default=0, metavar="N",
                    help="add N generated rewordings of each train question (origin: augmented)")
    sp.add_argument("--augment-only", action="store_true",
                    help="augment the corpus's existing qa.jsonl instead of generating a new set "
                         "(writes qa.augmented.jsonl unless --out)")

    sp = verb("score", cmd_score, "score answers from any system (JSONL: id, question, answer[, kind, reference, "
                                  "key_facts, label]) with the same scorer; prints rates and agreement with labels")
    sp.add_argument("answers", help="JSONL file, one answer a line")
    sp.add_argument("--corpus", default=DEFAULT_CORPUS, help="the corpus the answers are about (default: %(default)s)")
    sp.add_argument("--out", help="write every row plus outcome, reason and scoring_path to this JSONL file")
    sp.add_argument("--summary", metavar="FILE.json",
                    help="write the correct, hallucinated and abstained rates, automatic and corrected by the rows "
                         "that carry `label` (prediction-powered inference; they must be a uniformly random "
                         "sample of the rows), with 95%% intervals")
    add_judge_flags(sp)

    sp = verb("export", cmd_export, "write a fine-tuned variant as a merged Hugging Face model folder (safetensors), "
                                    "its adapter and a model card with its evaluation figures")
    sp.add_argument("corpus")
    sp.add_argument("--variant", choices=("sft", "rag_sft"), required=True)
    sp.add_argument("--to", required=True, metavar="DIR", help="a new (or empty) folder")

    sp = verb("label", cmd_label, "label a seeded random sample of the latest evaluation's answers by hand, blind "
                                  "(keys c/a/h/s/u/q; saved after each key, resumes where it stopped)")
    sp.add_argument("corpus", nargs="?", default=DEFAULT_CORPUS)
    sp.add_argument("--n", type=int, default=60, help="answers to sample: whole questions, every variant's answer "
                                                      "to each (default: %(default)s)")
    sp.add_argument("--seed", type=int, default=None,
                    help="the sample's seed (default: evaluation.seed of corpus.yaml, as the app's Labels tab)")
    sp.add_argument("--labeller", default=None, help="your name in labels.jsonl (default: $USER)")

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
