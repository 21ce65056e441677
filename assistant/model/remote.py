"""An engine whose answers come from an OpenAI-compatible server (vLLM, Ollama, another `assistant serve`).

`RemoteEngine` offers what the variants, the evaluation and the API's scheduler use of `Engine`
(render, count_tokens, generate, stream, stream_many, add_adapter, reuse_answers, batched, plan,
stats), so any variant answers through it unchanged: retrieval, prompts and scoring stay here,
only decoding moves. Prompts are rendered and counted with the local tokenizer of `model.name`
(context fitting stays exact); the server applies its own chat template to the same messages.

A LoRA variant is asked for the server's model named like its adapter (`sft`, `rag_sft`): vLLM
serves them with `--enable-lora --lora-modules sft=DIR rag_sft=DIR` (docs/serving.md). At most
`model.server.max_concurrency` requests are in flight at once, whoever sends them.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import openai
from tqdm.auto import tqdm

from assistant.config import ServerSettings
from assistant.errors import AssistantError
from assistant.model.engine import DecodeStats, Generation, Messages, StreamRow
from assistant.model.loading import load_tokenizer, resolve_model
from assistant.model.sampling import GREEDY, Sampling


class ServerError(AssistantError):
    """The answering server cannot be reached, refuses the key, or lacks a model; the message says the fix."""


@dataclass(frozen=True)
class RemotePlan:
    """What the evaluation's report card says about decoding (`Engine.plan`'s counterpart)."""

    base_url: str
    model: str
    concurrency: int

    def __str__(self) -> str:
        return f"answered by {self.model} at {self.base_url}, up to {self.concurrency} requests at once"


@dataclass
class _ConfigOnly:
    """Stands in for the model where variants read `engine.model.config` (the context window)."""

    config: object


def openai_client(base_url: str, api_key_env: str | None, timeout_s: float, max_retries: int = 2) -> openai.OpenAI:
    """The one place that opens the official `openai` client, for the answering server, the question
    generator and the LLM judge alike: its key read from `$api_key_env`. The client itself retries
    connection errors, timeouts, 408/409/429 and 5xx `max_retries` times with exponential backoff."""
    key = os.environ.get(api_key_env, "") if api_key_env else ""
    # The openai client insists on a key; servers without one (vLLM's and Ollama's default) ignore it.
    return openai.OpenAI(base_url=base_url, api_key=key or "not-needed", timeout=timeout_s, max_retries=max_retries)


def client_for(server: ServerSettings) -> openai.OpenAI:
    return openai_client(server.base_url, server.api_key_env, server.timeout_s)


def _explain(server: ServerSettings, e: Exception) -> ServerError:
    where = f"the answering server {server.base_url} (model.server)"
    if isinstance(e, openai.APIConnectionError):
        return ServerError(f"cannot reach {where}: {e}; start it, or fix model.server.base_url")
    if isinstance(e, openai.AuthenticationError):
        env = server.api_key_env
        return ServerError(f"{where} refused the API key: " + (f"check ${env}" if env else
                           "it wants one: set model.server.api_key_env to the variable that holds it"))
    if isinstance(e, openai.NotFoundError):
        return ServerError(f"{where} has no such model ({e.message}); compare GET {server.base_url}/models with "
                           "model.server.model, and serve sft and rag_sft under those names (vLLM --lora-modules)")
    return ServerError(f"{where} failed: {type(e).__name__}: {e}")


def server_problems(server: ServerSettings, adapters: Sequence[str] = ()) -> list[str]:
    """One line per thing that stops the server answering: unreachable, key refused, or the base
    model or a variant's adapter missing from its model list. For `assistant check`."""
    try:
        listed = {m.id for m in client_for(server).with_options(timeout=10, max_retries=0).models.list()}
    except openai.OpenAIError as e:
        return [str(_explain(server, e))]
    return [f"the answering server {server.base_url} does not list model {name!r} (it lists: "
            f"{', '.join(sorted(listed)) or 'none'}); " + ("fix model.server.model" if name == server.model else
                                                           f"serve the {name} adapter under that name "
                                                           "(vLLM: --enable-lora --lora-modules)")
            for name in [server.model, *adapters] if name not in listed]


class RemoteEngine:
    def __init__(self, server: ServerSettings, tokenizer, model_config=None, max_new_tokens: int = 64,
                 batch_size: int = 16):
        self.server = server
        self.tokenizer = tokenizer
        self.model = _ConfigOnly(model_config) if model_config is not None else None
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size  # the API scheduler's batch: requests sent together
        self.batch_invariant = True  # greedy answers do not depend on their neighbours here
        self.adapters: dict[str, str] = {}  # adapter -> the server's model id (the adapter's own name)
        self.stats = DecodeStats()
        self.client = client_for(server)
        self._slots = threading.BoundedSemaphore(server.max_concurrency)
        self._memo: dict | None = None

    # -- what the variants use of Engine ----------------------------------------------------
    def render(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def add_adapter(self, name: str, path: str) -> None:
        """The adapter is the server's: served under `name` (the local folder is what it was loaded from)."""
        self.adapters[name] = name

    def model_for(self, adapter: str | None) -> str:
        return self.adapters.get(adapter, adapter) if adapter else self.server.model

    def plan(self) -> RemotePlan:
        return RemotePlan(self.server.base_url, self.server.model, self.server.max_concurrency)

    @contextlib.contextmanager
    def batched(self, batch_size: int, batch_tokens: int | None = None) -> Iterator[None]:
        yield  # the server batches; concurrency is bounded by max_concurrency

    @contextlib.contextmanager
    def reuse_answers(self) -> Iterator[None]:
        """As `Engine.reuse_answers`: an identical greedy request is answered once."""
        saved = self._memo
        self._memo = {} if saved is None else saved
        try:
            yield
        finally:
            self._memo = saved

    # -- decoding -----------------------------------------------------------------------------
    def _request(self, messages: Messages, adapter: str | None, max_new: int, sampling: Sampling, stream: bool):
        options = {"temperature": sampling.temperature}
        if not sampling.greedy:
            options |= {"top_p": sampling.top_p} | ({"seed": sampling.seed} if sampling.seed is not None else {})
        try:
            return self.client.chat.completions.create(model=self.model_for(adapter), messages=messages,
                                                       max_tokens=max_new, stream=stream, **options)
        except openai.OpenAIError as e:
            raise _explain(self.server, e) from None

    def _complete(self, messages: Messages, adapter: str | None, max_new: int) -> Generation:
        with self._slots:
            t0 = time.perf_counter()
            r = self._request(messages, adapter, max_new, GREEDY, stream=False)
            latency = time.perf_counter() - t0
        text = (r.choices[0].message.content or "").strip()
        prompt = r.usage.prompt_tokens if r.usage else self.count_tokens(self.render(messages))
        completion = r.usage.completion_tokens if r.usage else self.count_tokens(text)
        return Generation(text, prompt, completion, latency, 1)

    def generate(self, conversations: Sequence[Messages], adapter: str | None = None,
                 max_new_tokens: int | None = None, batch_size: int | None = None,
                 progress: bool | str = False) -> list[Generation]:
        """Greedy answers, up to max_concurrency requests at once, in input order."""
        max_new = max_new_tokens or self.max_new_tokens
        keys = [(self.model_for(adapter), json.dumps(m, sort_keys=True), max_new) for m in conversations]
        memo = self._memo if self._memo is not None else {}
        todo = list({k: m for k, m in zip(keys, conversations) if k not in memo}.items())
        self.stats.reused += len(keys) - len(todo)
        bar = tqdm(total=len(todo), desc=progress if isinstance(progress, str) else "generating",
                   disable=not progress, unit="q")
        with ThreadPoolExecutor(self.server.max_concurrency, thread_name_prefix="remote") as pool:
            for (key, _), gen in zip(todo, pool.map(lambda km: self._complete(km[1], adapter, max_new), todo)):
                memo[key] = gen
                self.stats.answers += 1
                self.stats.tokens += gen.completion_tokens
                bar.update(1)
        bar.close()
        return [memo[k] for k in keys]

    def stream(self, messages: Messages, adapter: str | None = None,
               max_new_tokens: int | None = None, sampling: Sampling = GREEDY) -> Iterator[str]:
        for rows in self.stream_many([messages], [adapter], max_new_tokens, samplings=[sampling]):
            yield rows[0].text

    def stream_many(self, conversations: Sequence[Messages], adapters: Sequence[str | None] | None = None,
                    max_new_tokens: int | None = None, stop_rows: Callable[[], Sequence[bool]] | None = None,
                    samplings: Sequence[Sampling] | None = None) -> Iterator[list[StreamRow]]:
        """Every row's text so far, after each piece any row receives; one streamed request per row.
        A row `stop_rows` flags is dropped (its request closed); `samplings` gives each row's decoding."""
        n = len(conversations)
        adapters = list(adapters or [None] * n)
        samplings = list(samplings or [GREEDY] * n)
        max_new = max_new_tokens or self.max_new_tokens
        texts, done, open_rows = [""] * n, [False] * n, set(range(n))
        pieces: queue.Queue[tuple[int, str | None, object]] = queue.Queue()
        halt = threading.Event()

        def flagged(i: int) -> bool:
            return halt.is_set() or (stop_rows is not None and bool(stop_rows()[i]))

        def work(i: int) -> None:
            try:
                with self._slots:
                    if flagged(i):
                        return
                    with self._request(conversations[i], adapters[i], max_new, samplings[i], stream=True) as chunks:
                        for chunk in chunks:
                            if flagged(i):
                                return
                            choice = chunk.choices[0] if chunk.choices else None
                            if choice is not None:
                                pieces.put((i, choice.delta.content or "", choice.finish_reason))
            except BaseException as e:  # surfaced to the caller below
                pieces.put((i, None, e))
            finally:
                pieces.put((i, None, None))  # this row's request has ended

        threads = [threading.Thread(target=work, args=(i,), daemon=True, name="remote-stream") for i in range(n)]
        for t in threads:
            t.start()
        try:
            while open_rows:
                i, piece, extra = pieces.get()
                if isinstance(extra, BaseException):
                    raise extra
                if piece is None:
                    open_rows.discard(i)
                    continue
                texts[i] += piece
                done[i] = done[i] or extra == "stop"  # "length" ends with the stream, as in Engine
                yield [StreamRow(t, self.count_tokens(t), d) for t, d in zip(texts, done)]
        finally:
            halt.set()  # a caller that stops early (or an error) closes the other rows' requests
        self.stats.answers += n
        self.stats.tokens += sum(self.count_tokens(t) for t in texts)


def open_remote_engine(server: ServerSettings, model_name: str, max_new_tokens: int, batch_size: int) -> RemoteEngine:
    """A RemoteEngine with the local tokenizer and config of `model_name` (the base the adapters were trained on)."""
    from transformers import AutoConfig

    path = resolve_model(model_name)
    return RemoteEngine(server, load_tokenizer(path), AutoConfig.from_pretrained(path), max_new_tokens, batch_size)
