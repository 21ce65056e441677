"""`assistant VERB ...`: one verb, one function.

Every flag is written once, in FLAGS: its option strings, default and help. A verb is a function
decorated with `@verb(name, help, *flags)`; it takes its flags as keyword arguments (named by each
flag's dest) and returns the exit code. To add a verb, write one more such function (below the
others, in the order `assistant --help` lists them) and add any flag it needs to FLAGS.

A flag whose default belongs to the library (the server's limits, the app's address) defaults to
None here and is passed on only when given, so the library's default stays the only one.

Every user-facing failure (bad corpus, bad config, missing model, variant not built) exits with
code 2 and one line per problem, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.checks import NEAR_DUPLICATE
from assistant.config import VARIANTS
from assistant.errors import EXIT_INTERRUPTED, AssistantError, UsageError
from assistant.evaluation.labels import DEFAULT_N
from assistant.runtime import quiet_libraries

DEFAULT_CORPUS = "corpora/ecostride"


# -- the flags --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Flag:
    """One command-line argument: `add_argument`'s option strings and keywords."""

    names: tuple[str, ...]
    options: dict[str, Any]


def flag(*names: str, **options: Any) -> Flag:
    return Flag(names, options)


# Keyed by what verbs call them; flags that share an option string but mean different things
# (`--force`, `--out`, `--variant`, `--host`) are separate entries with the same dest.
FLAGS: dict[str, Flag] = {
    "corpus": flag("corpus"),
    "corpus_or_demo": flag("corpus", nargs="?", default=DEFAULT_CORPUS),
    "variants": flag("--variants", nargs="+", choices=VARIANTS, default=None),
    "limit": flag("--limit", type=int, default=None, help="evaluate at most N questions per slice"),
    "first_verdict": flag(
        "--no-first-verdict", dest="first_verdict", action="store_false",
        help="do not evaluate the other variants before training the fine-tunes that need it (by default "
             "their report and verdict come first: on the demo 12 minutes in, for one more scoring, 44 s)"),
    "judge": flag("--judge", action="store_true",
                  help="also grade every answer with the LLM judge of corpus.yaml's judge: section"),
    "judge_url": flag("--judge-url", default=None,
                      help="the judge's OpenAI-compatible /v1 URL (overrides judge.base_url)"),
    "judge_model": flag("--judge-model", default=None, help="the judge's model id (overrides judge.model)"),
    # build
    "build_variant": flag("--variant", choices=VARIANTS, default=None),
    "rebuild": flag("--force", action="store_true", help="rebuild even when up to date"),
    # ask
    "question": flag("question"),
    "ask_variant": flag("--variant", choices=VARIANTS, default="prompted"),
    "as_json": flag("--json", dest="as_json", action="store_true",
                    help="print the answer, sources and timings as JSON"),
    # check
    "strict": flag("--strict", action="store_true", help="treat review warnings as errors"),
    "near_duplicate": flag("--near-duplicate", type=float, default=NEAR_DUPLICATE, metavar="COSINE",
                           help="flag test questions this similar to a train question (default %(default)s)"),
    # retrieval
    "k": flag("-k", type=int, default=None, help="passages retrieved (default: retrieval.top_k)"),
    "split": flag("--split", default="test", choices=["train", "val", "test", "all"]),
    # app
    "app_host": flag("--host", default=None, help="address to bind (default: $GRADIO_SERVER_NAME or 127.0.0.1)"),
    "app_port": flag("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)"),
    "allow_remote": flag("--allow-remote", action="store_true",
                         help="allow a --host other than this machine (prints a warning; pair it with --auth)"),
    "auth": flag("--auth", metavar="USER:PASS", default=None, help="require this login (Gradio auth)"),
    "allow_eval": flag("--allow-eval", action="store_true",
                       help="show the 'Run the evaluation now' button (off: visitors cannot start an evaluation)"),
    "share": flag("--share", action="store_true",
                  help="create a public Gradio link (off by default; implies --allow-remote)"),
    # serve: None means the server's own default (assistant/serve/api.py: serve, Limits)
    "serve_host": flag("--host", default=None, help="address to bind (default 127.0.0.1: this machine only)"),
    "serve_port": flag("--port", type=int, default=None),
    "api_key": flag("--api-key", default=None,
                    help="require 'Authorization: Bearer KEY' (default: $ASSISTANT_API_KEY, else no key)"),
    "max_batch": flag("--max-batch", type=int, default=None,
                      help="requests decoded together (default: generation.batch_size)"),
    "max_queue": flag("--max-queue", type=int, default=None, help="requests waiting for a batch; more get 429"),
    "gather_ms": flag("--gather-ms", type=float, default=None,
                      help="an idle server waits this long for requests sent with the first, to prefill them "
                           "together (default 10; 0: none)"),
    "max_tokens": flag("--max-tokens", type=int, default=None, help="largest max_tokens a request may ask for"),
    "max_question_chars": flag("--max-question-chars", type=int, default=None,
                               help="longest last user message (default: generation.max_question_chars)"),
    "max_body_bytes": flag("--max-body-bytes", type=int, default=None,
                           help="largest request body; larger ones get 413 before they are read (default 1 MiB)"),
    # questions
    "qa_out": flag("--out", default=None, help="QA file to write (default: qa.jsonl when the corpus has none or "
                                               "a generated one, else qa.generated.jsonl beside it)"),
    "overwrite_qa": flag("--force", action="store_true", help="overwrite a hand-written QA file"),
    "augment": flag("--augment", type=int, default=0, metavar="N",
                    help="add N generated rewordings of each train question (origin: augmented)"),
    "augment_only": flag("--augment-only", action="store_true",
                         help="augment the corpus's existing qa.jsonl instead of generating a new set "
                              "(writes qa.augmented.jsonl unless --out)"),
    # score
    "answers": flag("answers", help="JSONL file, one answer a line"),
    "corpus_option": flag("--corpus", default=DEFAULT_CORPUS,
                          help="the corpus the answers are about (default: %(default)s)"),
    "scored_out": flag("--out", help="write every row plus outcome, reason and scoring_path to this JSONL file"),
    "summary": flag("--summary", metavar="FILE.json",
                    help="write the correct, hallucinated and abstained rates, automatic and corrected by the rows "
                         "that carry `label` (prediction-powered inference; they must be a uniformly random "
                         "sample of the rows), with 95%% intervals"),
    # export
    "export_variant": flag("--variant", choices=("sft", "rag_sft"), required=True),
    "export_to": flag("--to", required=True, metavar="DIR", help="a new (or empty) folder"),
    # label
    "n": flag("--n", type=int, default=DEFAULT_N, help="answers to sample: whole questions, every variant's "
                                                       "answer to each (default: %(default)s)"),
    "seed": flag("--seed", type=int, default=None,
                 help="the sample's seed (default: evaluation.seed of corpus.yaml, as the app's Labels tab)"),
    "labeller": flag("--labeller", default=None, help="your name in labels.jsonl (default: $USER)"),
    # import
    "source": flag("source", help="a QA file (.jsonl, .csv) or a SQuAD-format .json"),
    "corpus_out": flag("out", help="the corpus folder to write"),
    "docs": flag("--docs", help="folder of documents to copy into docs/ (JSONL/CSV imports)"),
    "name": flag("--name", help="corpus name (default: the folder's name)"),
    "test_fraction": flag("--test-fraction", type=float, default=0.2,
                          help="share of facts held out for testing when the input has no split (default %(default)s)"),
    "val_fraction": flag("--val-fraction", type=float, default=0.1,
                         help="share of facts for validation when the input has no split (default %(default)s)"),
    "overwrite_corpus": flag("--force", action="store_true", help="overwrite an existing corpus folder"),
}
JUDGE = ("judge", "judge_url", "judge_model")


# -- the verbs --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verb:
    fn: Callable[..., int | None]
    help: str
    flags: tuple[str, ...]


VERBS: dict[str, Verb] = {}  # in the order `assistant --help` lists them


def verb(name: str, help_: str, *flags: str) -> Callable:
    """Register the decorated function as `assistant NAME`, taking `flags` (keys of FLAGS)."""
    unknown = [f for f in flags if f not in FLAGS]
    if unknown:
        raise KeyError(f"verb {name!r}: no such flag in FLAGS: {unknown}")

    def register(fn: Callable[..., int | None]) -> Callable[..., int | None]:
        VERBS[name] = Verb(fn, help_, flags)
        return fn

    return register


def _corpus(path: str):
    from assistant.corpus.corpus import load_corpus

    return load_corpus(path)


def _judged_corpus(path: str, judge: bool, judge_url: str | None, judge_model: str | None):
    """The corpus, with --judge-url / --judge-model over corpus.yaml's judge: section when judging."""
    corpus = _corpus(path)
    if judge:
        cfg = corpus.config.judge
        overrides = {k: v for k, v in (("base_url", judge_url), ("model", judge_model)) if v}
        corpus.config.judge = cfg.model_copy(update=overrides)
    return corpus


def _given(**values: Any) -> dict[str, Any]:
    """The flags the user gave (not None): the rest keep the callee's own defaults."""
    return {k: v for k, v in values.items() if v is not None}


@verb("compare", "build what is missing or stale, evaluate every variant, write the report",
      "corpus_or_demo", "variants", "limit", "first_verdict", *JUDGE)
def compare(corpus: str, variants: list[str] | None, limit: int | None, first_verdict: bool,
            judge: bool, judge_url: str | None, judge_model: str | None) -> int:
    from assistant.evaluation.runner import compare as run_compare

    run_compare(_judged_corpus(corpus, judge, judge_url, judge_model), variants=variants, limit=limit,
                judge=judge, first_verdict=first_verdict)
    return 0


@verb("build", "build one or all variants (FAISS index, LoRA adapters)", "corpus", "build_variant", "rebuild")
def build(corpus: str, variant: str | None, force: bool) -> int:
    from assistant.variants.build import build_variants

    build_variants(_corpus(corpus), [variant] if variant else None, force=force)
    return 0


@verb("ask", "ask one variant one question", "corpus", "question", "ask_variant", "as_json")
def ask(corpus: str, question: str, variant: str, as_json: bool) -> int:
    from assistant.variants import load_variant

    if not question.strip():
        raise UsageError("empty question; pass the question as text, e.g. assistant ask CORPUS \"How long ...?\"")
    loaded = _corpus(corpus)
    limit = loaded.config.generation.max_question_chars
    if len(question) > limit:
        raise UsageError(f"question is {len(question)} characters, over the limit of {limit}; shorten it "
                         "or raise generation.max_question_chars in corpus.yaml")
    answer = load_variant(variant, loaded).answer(question)
    if as_json:
        print(json.dumps(answer.to_dict(), indent=2, ensure_ascii=False))
        return 0
    print(answer.text)
    for s in answer.sources:
        heading = f" > {s.heading}" if s.heading else ""
        print(f"  [{s.rank}] {s.citation()}{heading}  (score {s.score:.3f})")
    print(f"-- {variant}: {answer.latency_s:.2f} s, {answer.prompt_tokens} prompt + "
          f"{answer.completion_tokens} answer tokens", file=sys.stderr)
    max_new = loaded.config.generation.max_new_tokens
    if answer.completion_tokens >= max_new:
        print(f"-- cut off at generation.max_new_tokens={max_new}; raise it in corpus.yaml for the whole answer",
              file=sys.stderr)
    return 0


@verb("eval", "evaluate built variants on the test split", "corpus_or_demo", "variants", "limit", *JUDGE)
def evaluate(corpus: str, variants: list[str] | None, limit: int | None,
             judge: bool, judge_url: str | None, judge_model: str | None) -> int:
    from assistant.evaluation.runner import evaluate as run_evaluation

    run_evaluation(_judged_corpus(corpus, judge, judge_url, judge_model), variants=variants, limit=limit,
                   judge=judge)
    return 0


@verb("check", "validate a corpus and its QA set (exit 2 when invalid)", "corpus", "strict", "near_duplicate")
def check(corpus: str, strict: bool, near_duplicate: float) -> int:
    from assistant.checks import check_corpus

    return check_corpus(Path(corpus), strict=strict, near_duplicate=near_duplicate)


@verb("retrieval", "report retrieval recall@k and MRR of the gold documents", "corpus", "k", "split")
def retrieval(corpus: str, k: int | None, split: str) -> int:
    from assistant.variants.retrieval import report_retrieval

    if k is not None and k < 1:
        raise UsageError(f"-k must be at least 1 (passages retrieved), got {k}")
    report_retrieval(_corpus(corpus), k=k, split=split)
    return 0


@verb("app", "open the side-by-side Gradio chat over the built variants",
      "corpus_or_demo", "app_host", "app_port", "allow_remote", "auth", "allow_eval", "share")
def app(corpus: str, host: str | None, port: int | None, allow_remote: bool, auth: str | None, allow_eval: bool,
        share: bool) -> int:
    from assistant.serve.app import launch

    launch(corpus, host=host, port=port, share=share, allow_remote=allow_remote, auth=auth, allow_eval=allow_eval)
    return 0


@verb("serve", "serve the built variants over an OpenAI-compatible API (/v1/chat/completions)",
      "corpus_or_demo", "serve_host", "serve_port", "api_key", "max_batch", "max_queue", "gather_ms", "max_tokens",
      "max_question_chars", "max_body_bytes")
def serve(corpus: str, host: str | None, port: int | None, api_key: str | None, max_batch: int | None,
          max_queue: int | None, gather_ms: float | None, max_tokens: int | None, max_question_chars: int | None,
          max_body_bytes: int | None) -> int:
    from assistant.serve.api import Limits, serve as run_server

    # max_batch and max_question_chars are None in Limits too: the corpus's settings then apply.
    limits = Limits(max_batch=max_batch, max_question_chars=max_question_chars,
                    **_given(max_tokens=max_tokens, max_queue=max_queue, max_body_bytes=max_body_bytes,
                             gather_ms=gather_ms))
    run_server(_corpus(corpus), api_key=api_key, limits=limits, **_given(host=host, port=port))
    return 0


@verb("questions", "generate a validated question set (qa.jsonl) from the documents",
      "corpus", "qa_out", "overwrite_qa", "augment", "augment_only")
def questions(corpus: str, out: str | None, force: bool, augment: int, augment_only: bool) -> int:
    from assistant.evaluation.questions import REASONS, run_questions

    if augment < 0:
        raise UsageError(f"--augment must be 0 or more, got {augment}")
    # A folder of documents without qa.jsonl is the normal starting point here.
    loaded = _corpus(corpus)
    r = run_questions(loaded, out=out, force=force, augment_n=augment, augment_only=augment_only)
    made, kept = sum(r["generated"].values()), sum(r["kept"].values())
    print(f"generator {r['generator']}: {made} generated, {kept} kept ({100 * r['kept_share']:.0f}%)")
    for reason in REASONS:
        if r["dropped"].get(reason):
            print(f"  dropped {r['dropped'][reason]:>5}  {reason}")
    print("  kept: " + ", ".join(f"{k} {v}" for k, v in sorted(r["splits"].items())))
    print(f"wrote {r['written']} and the review sheet {r['review_sheet']} (edit it, then: assistant import "
          f"{r['review_sheet']} OUT --docs {Path(corpus) / 'docs'})")
    written = Path(r["written"]).resolve()
    if written.parent == loaded.root.resolve() and written != loaded.qa_path.resolve():
        print(f"to build and evaluate with it, set `qa_file: {written.name}` in {loaded.root / 'corpus.yaml'}")
    return 0


@verb("score", "score answers from any system (JSONL: id, question, answer[, kind, reference, key_facts, label]) "
               "with the same scorer; prints rates and agreement with labels",
      "answers", "corpus_option", "scored_out", "summary", *JUDGE)
def score(answers: str, corpus: str, out: str | None, summary: str | None,
          judge: bool, judge_url: str | None, judge_model: str | None) -> int:
    from assistant.evaluation.external import run_score

    path = Path(answers)
    if not path.is_file():
        raise UsageError(f"{path}: no such file; give a JSONL file of answers (id, question, answer)")
    run_score(path, _judged_corpus(corpus, judge, judge_url, judge_model), Path(out) if out else None,
              judge=judge, summary_path=Path(summary) if summary else None)
    return 0


@verb("export", "write a fine-tuned variant as a merged Hugging Face model folder (safetensors), its adapter "
                "and a model card with its evaluation figures", "corpus", "export_variant", "export_to")
def export(corpus: str, variant: str, to: str) -> int:
    from assistant.variants.export import export as export_variant, summary

    print(summary(export_variant(_corpus(corpus), variant, Path(to))))
    return 0


@verb("label", "label a seeded random sample of the latest evaluation's answers by hand, blind "
               "(keys c/a/h/s/u/q; saved after each key, resumes where it stopped)",
      "corpus_or_demo", "n", "seed", "labeller")
def label(corpus: str, n: int, seed: int | None, labeller: str | None) -> int:
    from assistant.evaluation.labels import label_queue, terminal_keys

    if n < 1:
        raise UsageError(f"--n must be a positive number of answers, got {n}; e.g. --n 60")
    loaded = _corpus(corpus)
    keys = terminal_keys(sys.stdin)
    try:
        got = label_queue(loaded, keys, sys.stdout, n=n, seed=seed, labeller=labeller or os.environ.get("USER", ""))
    finally:
        keys.close()  # gives the terminal its normal mode back
    print(f"{got['done']} of {got['total']} sampled answers labelled, {got['left']} to go, in {got['path']}.")
    if got["left"]:
        print(f"to resume: assistant label {corpus} --n {n}" + (f" --seed {seed}" if seed is not None else ""))
    print(f"the next `assistant eval {corpus}` corrects its rates with these labels (docs/labelling.md)")
    return 0


@verb("import", "create a corpus folder from existing documents and QA (JSONL, CSV, SQuAD)",
      "source", "corpus_out", "docs", "name", "test_fraction", "val_fraction", "overwrite_corpus")
def import_corpus(source: str, out: str, docs: str | None, name: str | None, test_fraction: float,
                  val_fraction: float, force: bool) -> int:
    from assistant.corpus.importers import run_import

    run_import(argparse.Namespace(source=source, out=out, docs=docs, name=name, test_fraction=test_fraction,
                                  val_fraction=val_fraction, force=force))
    return 0


# -- the parser -------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="assistant",
        description="Prompt, RAG or fine-tune? Build every variant from one corpus, compare them head "
                    "to head, and get a recommendation backed by numbers.")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, v in VERBS.items():
        sp = sub.add_parser(name, help=v.help, description=v.help)
        for key in v.flags:
            sp.add_argument(*FLAGS[key].names, **FLAGS[key].options)
    return p


def main(argv: list[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    fn = VERBS[args.pop("verb")].fn
    quiet_libraries()
    try:
        return fn(**args) or 0
    except AssistantError as e:
        for line in e.lines():
            print(f"error: {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; finished artifacts are kept and the next run resumes", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
