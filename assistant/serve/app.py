"""The Gradio app: every built variant side by side, the latest report, and blind A/B votes.

`build_app(corpus)` makes the Blocks; `launch(corpus_path, ...)` serves it (`assistant app`,
`python app.py`). The answering logic lives in `lineup.py`, the votes in `votes.py`.
"""

from __future__ import annotations

import hmac
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from assistant.errors import UsageError


def env_port() -> int | None:
    """GRADIO_SERVER_PORT as a number (None when unset). Gradio reads it when it is imported and
    dies with a bare ValueError on anything else, so it is checked before that import."""
    raw = os.environ.get("GRADIO_SERVER_PORT")
    if raw is None or not raw.strip():
        return None
    if not raw.strip().isdigit():
        raise UsageError(f"GRADIO_SERVER_PORT={raw!r} is not a port number; set it to e.g. 7860, or unset it")
    return int(raw)


env_port()
import gradio as gr  # noqa: E402  (after the check above)

from assistant.evaluation import labels

from assistant.evaluation import votes
from assistant.corpus.corpus import Corpus, load_corpus
from assistant.serve.lineup import (Column, Lineup, blind_pair, check_question, example_questions, load_lineup, load_report,
                      scheduler_for, stream_columns)
from assistant.variants import Source

HISTORY_TURNS = 4  # earlier turns a column sends back to the model: keeps prompts (and the batch) short
CSS = """
.stats { opacity: 0.65; font-size: 0.85em; }
#missing ul { margin-top: 0; }
"""
VOTE_LABELS = {"A": "A is better", "B": "B is better", "tie": "Tie", "both_bad": "Both are bad"}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
CITATION = re.compile(r"\s?\[(\d{1,3})\]")


# -- safety -----------------------------------------------------------------------------------
def as_text(text: str) -> str:
    """What a user typed, a model wrote or a document holds, shown as text: `<b>` stays `<b>`, no
    HTML runs, and a Markdown image (`![x](https://...)`) stays text, so a document cannot make the
    browser fetch a remote "tracking pixel"."""
    return html.escape(text, quote=False).replace("![", "!\\[")


class LoginThrottle:
    """Gradio's login has no throttle. Attempts are checked one at a time, and each wrong one makes
    the next attempt wait longer (1 s, 2 s, 4 s, ... up to `cap`); a right one resets the wait. A
    password guesser gets a few tries a minute instead of thousands a second."""

    def __init__(self, user: str, password: str, cap: float = 30.0, sleep=time.sleep):
        self._user, self._password, self._cap, self._sleep = user, password, cap, sleep
        self._failures = 0
        self._lock = threading.Lock()

    def __call__(self, user: str, password: str) -> bool:
        with self._lock:
            if self._failures:
                self._sleep(min(self._cap, 2.0 ** (self._failures - 1)))
            ok = hmac.compare_digest(str(user).encode(), self._user.encode()) & \
                hmac.compare_digest(str(password).encode(), self._password.encode())
            self._failures = 0 if ok else self._failures + 1
            return ok


def shown_citations(text: str, n_sources: int | None) -> str:
    """Drop citation markers that point at no passage shown (`[4]` with three passages), or every
    marker when `n_sources` is None (the blind tab: `[1]` would give `rag` away)."""
    def keep(m: re.Match) -> str:
        return m.group(0) if n_sources is not None and 1 <= int(m.group(1)) <= n_sources else ""

    return CITATION.sub(keep, text)


def was_cut_off(col: Column, max_new_tokens: int | None) -> bool:
    a = col.answer
    return bool(max_new_tokens and a and not a.abstained_before_generation and a.completion_tokens >= max_new_tokens)


# -- rendering --------------------------------------------------------------------------------
def stats_line(col: Column) -> str:
    a = col.answer
    if a is None:
        return ""
    if a.abstained_before_generation:
        return f"{a.latency_s:.2f} s · abstained before generating (no passage relevant enough)"
    return f"{a.latency_s:.2f} s · {a.prompt_tokens} prompt + {a.completion_tokens} answer tokens"


def render_answer(col: Column, stats: bool = True, max_new_tokens: int | None = None, blind: bool = False) -> str:
    if col.error:
        return f"**Error:** {as_text(col.error)}"
    text = col.answer.text if col.answer else ""
    text = as_text(shown_citations(text, None if blind else len(col.answer.sources) if col.answer else 0))
    if not col.done:
        return text + " ▌" if text else "*thinking…*"
    body = text or "*(empty answer)*"
    if was_cut_off(col, max_new_tokens):
        body += f" … *(cut off at the {max_new_tokens}-token limit, generation.max_new_tokens)*"
    return body + f"\n\n<span class='stats'>{stats_line(col)}</span>" if stats else body


def render_chat(turns: list[tuple[str, Column]], stats: bool = True, max_new_tokens: int | None = None,
                blind: bool = False) -> list[dict]:
    """A column's turns as Chatbot messages; a stats line sits under each finished answer."""
    msgs = []
    for question, col in turns:
        msgs += [{"role": "user", "content": as_text(question)},
                 {"role": "assistant", "content": render_answer(col, stats, max_new_tokens, blind)}]
    return msgs


def render_sources(sources: list[Source]) -> str:
    parts = []
    for i, s in enumerate(sources, 1):
        heading = f" › {s.heading}" if s.heading else ""
        text = " ".join(s.text.split())
        text = text if len(text) <= 400 else text[:400] + "…"
        # Numbered as the prompt numbered them (1..n of the passages shown), whatever the index rank.
        parts.append(f"**[{i}] {as_text(s.citation() + heading)}** · score {s.score:.3f}\n\n> {as_text(text)}")
    return "\n\n".join(parts)


def history_of(turns: list[tuple[str, Column]]) -> list[tuple[str, str]]:
    """The finished, error-free turns a variant sees again as conversation history."""
    done = [(q, c.answer.text) for q, c in turns if c.done and not c.error and c.answer]
    return done[-HISTORY_TURNS:]


def votes_path(corpus: Corpus) -> Path:
    return corpus.runs.votes


def votes_table(corpus: Corpus) -> list[list] | None:
    rows = [[r["variant"], r["votes"], r["wins"], r["ties"], r["losses"], r["both_bad"],
             f"{r['win_rate']:.0%} [{r['low']:.0%}, {r['high']:.0%}]"]
            for r in votes.win_rates(votes.read_votes(votes_path(corpus)))]
    return rows or None


def servable_copies(paths: list[str]) -> list[str]:
    """Copies of the report's plots in a temporary folder: Gradio serves them from its cache, so
    no folder of runs/ (answer caches, votes, labels) has to be an allowed path."""
    out = Path(tempfile.mkdtemp(prefix="assistant-plots-"))
    return [shutil.copy2(p, out / f"{i}-{Path(p).name}") for i, p in enumerate(paths)]


# -- background evaluation --------------------------------------------------------------------
_eval_jobs: dict[str, subprocess.Popen] = {}


def start_evaluation(corpus: Corpus, command: list[str] | None = None) -> str:
    """Evaluate the built variants in a background process; return a status line."""
    key = str(corpus.root.resolve())
    job = _eval_jobs.get(key)
    if job is not None and job.poll() is None:
        return f"An evaluation is already running (pid {job.pid}); press Refresh when it finishes."
    log_path = corpus.runs.app_eval_log
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = command or [sys.executable, "-m", "assistant.cli", "eval", str(corpus.root)]
    with open(log_path, "w") as out:
        _eval_jobs[key] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return f"Evaluation started (pid {_eval_jobs[key].pid}, log `{log_path}`); press Refresh when it finishes."


def evaluation_status(corpus: Corpus) -> str:
    job = _eval_jobs.get(str(corpus.root.resolve()))
    if job is None:
        return ""
    if job.poll() is None:
        return f"Evaluation running (pid {job.pid})…"
    if job.returncode == 0:
        return "The evaluation started from here has finished."
    log_path = corpus.runs.app_eval_log
    return f"The evaluation failed (exit code {job.returncode}); see `{log_path}`."


# -- the app ----------------------------------------------------------------------------------
def build_app(corpus: Corpus, lineup: Lineup | None = None, allow_eval: bool = False) -> gr.Blocks:
    """The app; `allow_eval` adds the button that starts an evaluation (off unless the operator
    passes `--allow-eval`: anyone who can reach the page could otherwise keep the machine busy)."""
    lineup = lineup or load_lineup(corpus)
    names = list(lineup.variants)
    with gr.Blocks(title=f"{corpus.name}: prompt, RAG or fine-tune?", fill_width=True) as demo:
        gr.Markdown(f"## {corpus.name}: prompt, RAG or fine-tune?\n{corpus.config.description}  \n"
                    f"Model `{corpus.config.model.name}` · serving: {', '.join(names) or 'nothing yet'}")
        if lineup.missing:
            gr.Markdown("\n".join(f"- {m}" for m in lineup.missing.values()), elem_id="missing")
        with gr.Tabs():
            with gr.Tab("Side by side", id="chat"):
                chat_tab(corpus, lineup)
            with gr.Tab("Report", id="report"):
                fill_report, report_outputs = report_tab(corpus, allow_eval)
            with gr.Tab("Blind comparison", id="blind"):
                tally = blind_tab(corpus, lineup)
            with gr.Tab("Label answers", id="label"):
                fill_labels, label_outputs = label_tab(corpus)
        demo.load(fill_report, outputs=report_outputs)
        demo.load(fill_labels, outputs=label_outputs)
        if tally is not None:  # votes cast elsewhere since the app started
            demo.load(lambda: votes_table(corpus), outputs=tally)
    demo.queue(max_size=64)
    return demo


def chat_tab(corpus: Corpus, lineup: Lineup) -> None:
    names = list(lineup.variants)
    limit = corpus.config.generation.max_question_chars
    max_new = corpus.config.generation.max_new_tokens
    if not names:
        gr.Markdown("No variant can answer yet; see the messages above.")
        return
    turns_state = gr.State({n: [] for n in names})  # per column: [(question, Column)]
    chats, panels, passages = {}, {}, {}
    with gr.Row(equal_height=False):
        for n in names:
            with gr.Column(min_width=280):
                chats[n] = gr.Chatbot(label=n, height=460, elem_id=f"chat-{n}", buttons=["copy"],
                                      feedback_options=None)
                with gr.Accordion("Passages", open=False, visible=False, elem_id=f"passages-{n}") as panels[n]:
                    passages[n] = gr.Markdown()
    with gr.Row():
        question = gr.Textbox(placeholder=f"Ask the {corpus.name} assistant… (up to {limit} characters)",
                              show_label=False, scale=6, elem_id="question", lines=1, max_lines=6)
        ask_btn = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
        clear_btn = gr.Button("Clear", scale=1, elem_id="clear")
    status = gr.Markdown(elem_id="status")

    def ask(q: str, turns: dict):
        q = (q or "").strip()
        problem = check_question(q, limit)
        if problem:
            gr.Warning(problem)
            yield {status: f"**{problem}**"}
            return
        histories = {n: history_of(turns.get(n, [])) for n in names}
        yield {question: "", status: ""}
        for cols in stream_columns(lineup.variants, q, histories):
            now = {n: [*turns.get(n, []), (q, cols[n])] for n in names}
            yield {chats[n]: render_chat(now[n], max_new_tokens=max_new) for n in names}
        for n, col in cols.items():
            if col.error:
                gr.Warning(f"{n} failed: {col.error}")
        sources = {n: (c.answer.sources if c.answer else []) for n, c in cols.items()}
        yield {turns_state: now, **{passages[n]: render_sources(sources[n]) for n in names},
               **{panels[n]: gr.Accordion(visible=bool(sources[n]), label=f"Passages ({len(sources[n])})")
                  for n in names}}

    def clear():
        return {turns_state: {n: [] for n in names}, status: "", question: "",
                **{chats[n]: [] for n in names}, **{passages[n]: "" for n in names},
                **{panels[n]: gr.Accordion(visible=False) for n in names}}

    outputs = [turns_state, status, question, *chats.values(), *passages.values(), *panels.values()]
    # One engine answers everything: generation events share one queue slot, so tabs wait their turn.
    run = dict(fn=ask, inputs=[question, turns_state], outputs=outputs, concurrency_id="engine",
               concurrency_limit=1)
    asked = [ask_btn.click(**run), question.submit(**run)]
    examples = example_questions(corpus)
    if examples:
        ex = gr.Examples([[e] for e in examples], inputs=[question],
                         label="Example questions from the test split (click to ask; the last one is not answerable)",
                         elem_id="examples")
        asked.append(ex.load_input_event.then(**run))
    clear_btn.click(clear, outputs=outputs, cancels=asked, queue=False)


def report_tab(corpus: Corpus, allow_eval: bool = False):
    """The report tab; returns the function that fills it and its outputs (run on page load)."""
    verdict = gr.Markdown(elem_id="verdict")
    with gr.Row():
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=120, elem_id="report-refresh")
        rerun = (gr.Button("Run the evaluation now", size="sm", scale=0, min_width=220, elem_id="report-rerun")
                 if allow_eval else None)
    job = gr.Markdown(elem_id="report-job")
    gr.Markdown(f"From a terminal: `assistant compare {corpus.root}` builds what is missing and evaluates "
                f"every variant; `assistant eval {corpus.root}` (the button) evaluates the built ones.")
    plots = gr.Gallery(label="Plots", preview=True, columns=6, height=600, object_fit="contain", elem_id="plots",
                       visible=False)
    table = gr.Dataframe(label="Questions the variants disagree on", interactive=False, wrap=True,
                         elem_id="disagreements", visible=False)
    with gr.Accordion("Full report (report.md)", open=False, visible=False) as full:
        report_md = gr.Markdown(elem_id="report-md")

    def fill():
        r = load_report(corpus)
        where = f"\n\n<span class='stats'>from `{r.folder}`</span>" if r.found else ""
        return (("### Verdict\n" if r.found else "") + r.verdict + where,
                gr.Gallery(value=servable_copies(r.plots) or None, visible=bool(r.plots)),
                gr.Dataframe(value=r.rows, headers=r.headers, visible=True) if r.rows else gr.Dataframe(visible=False),
                gr.Accordion(visible=r.found), r.report_md, evaluation_status(corpus))

    outputs = [verdict, plots, table, full, report_md, job]
    refresh.click(fill, outputs=outputs)
    if rerun is not None:  # not registered at all otherwise: no API endpoint to call either
        rerun.click(lambda: start_evaluation(corpus), outputs=job)
    return fill, outputs


def blind_tab(corpus: Corpus, lineup: Lineup) -> gr.Dataframe | None:
    names = list(lineup.variants)
    limit = corpus.config.generation.max_question_chars
    if len(names) < 2:
        gr.Markdown(f"Blind comparison needs two built variants; only {', '.join(names) or 'none'} "
                    f"{'is' if len(names) == 1 else 'are'} built. Build another, e.g. "
                    f"`assistant build {corpus.root} --variant rag`.", elem_id="blind-explain")
        return None
    gr.Markdown("Two variants, picked at random each time you ask, answer under hidden labels (citation "
                "markers removed). Vote for the better answer; the labels are revealed after your vote.")
    pair_state = gr.State(None)
    with gr.Row():
        question = gr.Textbox(placeholder="Ask a question…", show_label=False, scale=6, elem_id="blind-question")
        ask_btn = gr.Button("Ask", variant="primary", scale=1, elem_id="blind-ask")
    with gr.Row():
        chat_a = gr.Chatbot(label="A", height=320, elem_id="blind-a", buttons=["copy"], feedback_options=None)
        chat_b = gr.Chatbot(label="B", height=320, elem_id="blind-b", buttons=["copy"], feedback_options=None)
    with gr.Row():
        buttons = {v: gr.Button(label, interactive=False, elem_id=f"vote-{v}") for v, label in VOTE_LABELS.items()}
    reveal = gr.Markdown(elem_id="blind-reveal")
    tally = gr.Dataframe(headers=["variant", "votes", "wins", "ties", "losses", "both bad", "win rate [95% CI]"],
                         value=votes_table(corpus), label="Votes so far", interactive=False, elem_id="tally")
    locked = [gr.update(interactive=False)] * len(buttons)  # gr.Button() here would render a new button

    def ask(q: str):
        q = (q or "").strip()
        problem = check_question(q, limit)
        if problem:
            gr.Warning(problem)
            yield None, [], [], f"**{problem}**", *locked
            return
        a, b = blind_pair(q, names)
        for cols in stream_columns({a: lineup.variants[a], b: lineup.variants[b]}, q):
            # No stats, no sources: they would give the variant away.
            yield (None, render_chat([(q, cols[a])], stats=False, blind=True),
                   render_chat([(q, cols[b])], stats=False, blind=True), "", *locked)
        yield ({"question": q, "a": a, "b": b}, gr.skip(), gr.skip(), "Which answer is better?",
               *[gr.update(interactive=True)] * len(buttons))

    def vote(choice: str, pair: dict | None):
        if not pair:
            return None, "Ask a question first.", *locked, gr.skip()
        try:
            votes.append_vote(votes_path(corpus), pair["question"], pair["a"], pair["b"], choice)
        except OSError as e:
            gr.Warning(f"Could not record the vote: {e}")
            return pair, f"**Could not record the vote ({e}).**", *[gr.skip()] * len(buttons), gr.skip()
        return (None, f"A was **{pair['a']}**, B was **{pair['b']}**. You voted: {VOTE_LABELS[choice]}; "
                      f"recorded in `{votes_path(corpus)}`.", *locked, votes_table(corpus))

    outputs = [pair_state, chat_a, chat_b, reveal, *buttons.values()]
    run = dict(fn=ask, inputs=question, outputs=outputs, concurrency_id="engine", concurrency_limit=1)
    ask_btn.click(**run)
    question.submit(**run)
    for choice, btn in buttons.items():
        btn.click(lambda pair, c=choice: vote(c, pair), inputs=pair_state,
                  outputs=[pair_state, reveal, *buttons.values(), tally])
    examples = example_questions(corpus)
    if examples:
        ex = gr.Examples([[e] for e in examples], inputs=[question], label="Example questions",
                         elem_id="blind-examples")
        ex.load_input_event.then(**run)
    return tally


LABEL_BUTTONS = {"correct": "Correct (c)", "abstained": "Abstained: no answer (a)",
                 "hallucinated": "Hallucinated: wrong (h)", "skip": "Skip (s)"}


def label_next(corpus: Corpus, n: int = labels.DEFAULT_N) -> tuple[dict | None, str, str]:
    """The next answer of the label queue: (row or None, its card, the progress line). The same
    queue as `assistant label` (labels.sample with the corpus's seed): same answers, same order."""
    rows = labels.latest_results(corpus)
    if not rows:
        return None, f"No evaluation to label yet: run `assistant eval {corpus.root}`.", ""
    path = corpus.runs.labels
    done, skips = labels.read_labels(path), labels.read_skips(path)
    items = labels.sample(rows, n, corpus.config.evaluation.seed)
    todo = labels.pending(items, done, skips)
    progress = labels.progress(items, done, skips)
    if not todo:
        return None, (f"Every answer of the sample is labelled. Thank you. To label more, run `assistant label "
                      f"{corpus.root} --n {2 * n}` (the same queue, extended)."), progress
    return todo[0], labels.render(todo[0], labels.Passages(corpus, rows).for_row(todo[0])), progress


def label_record(corpus: Corpus, row: dict | None, label: str, labeller: str) -> tuple[dict | None, str, str]:
    """Save the label (or skip) of `row` to labels.jsonl, then show the next answer."""
    if row:
        try:
            labels.append_label(corpus.runs.labels, row, label, labeller)
        except OSError as e:
            return row, f"**Could not record the label ({e}).**\n\n" + labels.render(row), ""
    return label_next(corpus)


def label_undo(corpus: Corpus) -> tuple[dict | None, str, str]:
    """Take back the latest label or skip of the queue, then show that answer again."""
    rows = labels.latest_results(corpus)
    keys = {labels.key(r) for r in labels.sample(rows, labels.DEFAULT_N, corpus.config.evaluation.seed)}
    try:
        labels.undo_last(corpus.runs.labels, keys)
    except OSError as e:
        current, card, progress = label_next(corpus)
        return current, f"**Could not undo ({e}).**\n\n" + card, progress
    return label_next(corpus)


def label_tab(corpus: Corpus):
    """One answer at a time from the label queue, without the variant's name or the scorer's outcome."""
    gr.Markdown("Judge answers of the latest evaluation as a careful reader would, from the reference and the "
                "passages. The answers come in a seeded random order, every variant's answer to each question "
                "(the same queue as `assistant label`), so the labels are a random sample the report can correct "
                f"its rates with. Labels land in `{corpus.runs.labels}`; see docs/labelling.md.")
    labeller = gr.Textbox(label="Your name", value=os.environ.get("USER", ""), max_lines=1, elem_id="labeller")
    progress = gr.Markdown(elem_id="label-progress")
    card = gr.Markdown(elem_id="label-card")
    current = gr.State(None)
    with gr.Row():
        buttons = {k: gr.Button(text, elem_id=f"label-{k}") for k, text in LABEL_BUTTONS.items()}
        undo = gr.Button("Undo (u)", elem_id="label-undo")
    outputs = [current, card, progress]
    for k, btn in buttons.items():
        btn.click(lambda row, who, k=k: label_record(corpus, row, k, who), inputs=[current, labeller], outputs=outputs)
    undo.click(lambda: label_undo(corpus), outputs=outputs)
    return lambda: label_next(corpus), outputs


def serve_address(host: str | None, port: int | None, allow_remote: bool = False) -> tuple[str, int]:
    """Host and port: the flags, else GRADIO_SERVER_NAME / GRADIO_SERVER_PORT as Gradio users expect,
    else 127.0.0.1:7860. Any other address than this machine's needs `allow_remote`."""
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    port = port if port is not None else env_port() or 7860
    if not 0 < port < 65536:
        raise UsageError(f"port {port} is out of range; pass --port between 1 and 65535")
    if host not in LOCAL_HOSTS and not allow_remote:
        raise UsageError(f"serving on {host} would expose the app to other machines; pass --allow-remote "
                         "(and --auth USER:PASS) to do so, or use --host 127.0.0.1")
    return host, port


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    if not auth:
        return None
    user, sep, password = auth.partition(":")
    if not (sep and user and password):
        raise UsageError("--auth takes USER:PASSWORD, e.g. --auth alice:s3cret")
    return user, password


def launch(corpus_path: str | Path, host: str | None = None, port: int | None = None, share: bool = False,
           allow_remote: bool = False, auth: str | None = None, allow_eval: bool = False) -> None:
    """Serve the app on host:port until interrupted (what `assistant app` and `python app.py` run)."""
    host, port = serve_address(host, port, allow_remote or share)
    credentials = parse_auth(auth)
    corpus = load_corpus(corpus_path)
    if host not in LOCAL_HOSTS or share:
        print(f"warning: the app is reachable from other machines ({'a public share link' if share else host})"
              + ("" if credentials else " by anyone, without a password: add --auth USER:PASS"), file=sys.stderr)
    print(f"loading the variants of {corpus.name} ({corpus.config.model.name})…", file=sys.stderr)
    lineup = load_lineup(corpus)
    demo = build_app(corpus, lineup, allow_eval=allow_eval)
    engines = [v.engine for v in lineup.variants.values() if getattr(v, "engine", None) is not None]
    # The chat's decoding loop runs on this thread, the one that loaded the model (Scheduler.run
    # says why), once Gradio serves from its own.
    scheduler = scheduler_for(engines[0], thread=False) if engines else None
    try:
        # No allowed_paths: nothing under runs/ (answer caches, votes, labels) is served; the
        # report's plots are copied out (servable_copies).
        # The app takes no files, but Gradio's upload route is always there: a 1-byte cap keeps anyone
        # who can reach the port from storing files on this machine and fetching them back.
        demo.launch(server_name=host, server_port=port, share=share, css=CSS, show_error=False,
                    auth=LoginThrottle(*credentials) if credentials else None, max_file_size=1,
                    prevent_thread_lock=scheduler is not None)
    except OSError as e:
        if scheduler is not None:
            scheduler.close()
        raise UsageError(f"cannot serve on {host}:{port} ({e}); pass another --port") from None
    if scheduler is None:
        return
    try:
        scheduler.run()  # until interrupted
    except KeyboardInterrupt:
        pass
    finally:
        scheduler.close()
        demo.close()
