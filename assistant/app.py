"""The Gradio app: every built variant side by side, the latest report, and blind A/B votes.

`build_app(corpus)` makes the Blocks; `launch(corpus_path, ...)` serves it (`assistant app`,
`python app.py`). The answering logic lives in `serving.py`, the votes in `votes.py`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gradio as gr

from . import votes
from .corpus import Corpus, load_corpus
from .serving import (Column, Lineup, blind_pair, check_question, example_questions, load_lineup, load_report,
                      stream_columns)
from .variants import Source

HISTORY_TURNS = 4  # earlier turns a column sends back to the model: keeps prompts (and the batch) short
CSS = """
.stats { opacity: 0.65; font-size: 0.85em; }
#missing ul { margin-top: 0; }
"""
VOTE_LABELS = {"A": "A is better", "B": "B is better", "tie": "Tie", "both_bad": "Both are bad"}


# -- rendering --------------------------------------------------------------------------------
def stats_line(col: Column) -> str:
    a = col.answer
    if a is None:
        return ""
    if a.abstained_before_generation:
        return f"{a.latency_s:.2f} s · abstained before generating (no passage relevant enough)"
    return f"{a.latency_s:.2f} s · {a.prompt_tokens} prompt + {a.completion_tokens} answer tokens"


def render_answer(col: Column, stats: bool = True) -> str:
    if col.error:
        return f"**Error:** {col.error}"
    text = col.answer.text if col.answer else ""
    if not col.done:
        return text + " ▌" if text else "*thinking…*"
    body = text or "*(empty answer)*"
    return body + f"\n\n<span class='stats'>{stats_line(col)}</span>" if stats else body


def render_chat(turns: list[tuple[str, Column]], stats: bool = True) -> list[dict]:
    """A column's turns as Chatbot messages; a stats line sits under each finished answer."""
    msgs = []
    for question, col in turns:
        msgs += [{"role": "user", "content": question}, {"role": "assistant", "content": render_answer(col, stats)}]
    return msgs


def render_sources(sources: list[Source]) -> str:
    parts = []
    for i, s in enumerate(sources, 1):
        heading = f" › {s.heading}" if s.heading else ""
        text = " ".join(s.text.split())
        text = text if len(text) <= 400 else text[:400] + "…"
        parts.append(f"**[{s.rank or i}] {s.citation()}{heading}** · score {s.score:.3f}\n\n> {text}")
    return "\n\n".join(parts)


def history_of(turns: list[tuple[str, Column]]) -> list[tuple[str, str]]:
    """The finished, error-free turns a variant sees again as conversation history."""
    done = [(q, c.answer.text) for q, c in turns if c.done and not c.error and c.answer]
    return done[-HISTORY_TURNS:]


def votes_path(corpus: Corpus) -> Path:
    return corpus.runs_dir / "votes.jsonl"


def votes_table(corpus: Corpus) -> list[list] | None:
    rows = [[r["variant"], r["votes"], r["wins"], r["ties"], r["losses"], r["both_bad"],
             f"{r['win_rate']:.0%} [{r['low']:.0%}, {r['high']:.0%}]"]
            for r in votes.win_rates(votes.read_votes(votes_path(corpus)))]
    return rows or None


# -- background evaluation --------------------------------------------------------------------
_eval_jobs: dict[str, subprocess.Popen] = {}


def start_evaluation(corpus: Corpus, command: list[str] | None = None) -> str:
    """Evaluate the built variants in a background process; return a status line."""
    key = str(corpus.root.resolve())
    job = _eval_jobs.get(key)
    if job is not None and job.poll() is None:
        return f"An evaluation is already running (pid {job.pid}); press Refresh when it finishes."
    log_path = corpus.runs_dir / "eval" / "app-evaluation.log"
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
    log_path = corpus.runs_dir / "eval" / "app-evaluation.log"
    return f"The evaluation failed (exit code {job.returncode}); see `{log_path}`."


# -- the app ----------------------------------------------------------------------------------
def build_app(corpus: Corpus, lineup: Lineup | None = None) -> gr.Blocks:
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
                fill_report, report_outputs = report_tab(corpus)
            with gr.Tab("Blind comparison", id="blind"):
                tally = blind_tab(corpus, lineup)
        demo.load(fill_report, outputs=report_outputs)
        if tally is not None:  # votes cast elsewhere since the app started
            demo.load(lambda: votes_table(corpus), outputs=tally)
    demo.queue(max_size=64)
    return demo


def chat_tab(corpus: Corpus, lineup: Lineup) -> None:
    names = list(lineup.variants)
    limit = corpus.config.generation.max_question_chars
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
            yield {chats[n]: render_chat(now[n]) for n in names}
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


def report_tab(corpus: Corpus):
    """The report tab; returns the function that fills it and its outputs (run on page load)."""
    verdict = gr.Markdown(elem_id="verdict")
    with gr.Row():
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=120, elem_id="report-refresh")
        rerun = gr.Button("Run the evaluation now", size="sm", scale=0, min_width=220, elem_id="report-rerun")
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
                gr.Gallery(value=r.plots or None, visible=bool(r.plots)),
                gr.Dataframe(value=r.rows, headers=r.headers, visible=True) if r.rows else gr.Dataframe(visible=False),
                gr.Accordion(visible=r.found), r.report_md, evaluation_status(corpus))

    outputs = [verdict, plots, table, full, report_md, job]
    refresh.click(fill, outputs=outputs)
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
    gr.Markdown("Two variants, picked at random for each question, answer under hidden labels. "
                "Vote for the better answer; the labels are revealed after your vote.")
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
            yield (None, render_chat([(q, cols[a])], stats=False), render_chat([(q, cols[b])], stats=False),
                   "", *locked)
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


def launch(corpus_path: str | Path, host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> None:
    """Serve the app on host:port until interrupted (what `assistant app` and `python app.py` run)."""
    from .errors import UsageError

    corpus = load_corpus(corpus_path)
    print(f"loading the variants of {corpus.name} ({corpus.config.model.name})…", file=sys.stderr)
    demo = build_app(corpus)
    try:
        demo.launch(server_name=host, server_port=port, share=share, css=CSS, show_error=False,
                    allowed_paths=[str(corpus.runs_dir.resolve())])
    except OSError as e:
        raise UsageError(f"cannot serve on {host}:{port} ({e}); pass another --port") from None
