"""The generation engine shared by every variant: batched greedy decoding and token streaming.

One `Engine` wraps one loaded base model. Fine-tuned variants are LoRA adapters loaded onto that
same base (`Engine.add_adapter`), so the four variants share one copy of the weights; each call
names the adapter to use, or none for the plain base model.
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.generation.streamers import BaseStreamer

from assistant.model import invariance
from assistant.model.loading import cache_argument
from assistant.runtime import torch_threads

Messages = list[dict[str, str]]


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # wall time of the batch this answer was decoded in
    batch_size: int = 1


@dataclass(frozen=True)
class DecodePlan:
    """How the engine decodes a batch so that no answer depends on its neighbours (`Engine.plan`)."""

    rows: int  # fewest rows a batch decodes with (a short batch is filled with copies)
    threads: int | None = None  # torch threads while decoding; None: the process's own
    alone: bool = False  # no safe row count: every question is decoded on its own

    def __str__(self) -> str:
        if self.alone:
            return "each question decoded alone (no batch-invariant row count)"
        threads = f", {self.threads} thread while decoding" if self.threads else ""
        return f"batches of at least {self.rows} rows{threads}"


@dataclass
class DecodeStats:
    """What the engine decoded since it was created: the evaluation reports it (work done, not assumed)."""

    answers: int = 0  # decoded (fillers excluded)
    reused: int = 0  # answered with an earlier identical prompt's Generation instead
    tokens: int = 0  # answer tokens kept
    row_steps: int = 0  # rows x forward passes computed, fillers and finished rows still in the batch included
    alone: int = 0  # decoded one question at a time: no batch-invariant row count here (`Engine.plan`)


class Engine:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 max_new_tokens: int = 64, batch_size: int = 16, batch_invariant: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.batch_tokens: int | None = None  # see batched()
        self.batch_invariant = batch_invariant
        self._dtype = model.dtype  # the base model's; PEFT may load adapters in another
        if batch_invariant:  # neither padding nor batch neighbours may change an answer: see invariance.py
            model.set_attn_implementation(invariance.register())
        self.adapters: dict[str, str] = {}
        self._memo: dict | None = None  # prompt -> Generation, within reuse_answers()
        self.stats = DecodeStats()
        # Generation mutates adapter state; one request at a time keeps Gradio's threads safe.
        self._lock = threading.RLock()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def plan(self) -> DecodePlan:
        """How this engine keeps an answer independent of its batch on this machine, probed once per
        dtype and thread count (see invariance.py): pad every batch to the fewest rows whose matrix
        kernels no longer depend on the row count; else, on CPU, do the same with one thread if that
        is invariant (measured: an Intel AMX CPU in fp32 with two threads is not, with one is); else
        decode each question alone (measured: the same CPU in bf16 at any thread count), which is
        what a lone question does by definition. Without batch invariance: plain batches."""
        if not self.batch_invariant:
            return DecodePlan(rows=1)
        shapes = invariance.linear_shapes(self.model)
        max_rows = max(self.batch_size, 4)
        # Under the lock: the one-thread probe changes the process's thread count while it runs.
        with self._lock:
            rows = invariance.min_rows(shapes, self.dtype, self.device.type, max_rows)
            if rows is not None:
                return DecodePlan(rows=rows)
            if self.device.type == "cpu" and torch.get_num_threads() > 1:
                with torch_threads(1):
                    rows = invariance.min_rows(shapes, self.dtype, self.device.type, max_rows)
                if rows is not None:
                    return DecodePlan(rows=rows, threads=1)
        return DecodePlan(rows=1, alone=True)

    @contextlib.contextmanager
    def decoding_threads(self, plan: DecodePlan) -> Iterator[None]:
        """The thread count the plan was probed with, while decoding."""
        with torch_threads(plan.threads) if plan.threads else contextlib.nullcontext():
            yield

    def _fill(self, rows: list, minimum: int) -> list:
        """A short batch filled up with copies of its last row (their answers are dropped)."""
        return rows + [rows[-1]] * (minimum - len(rows))

    # -- adapters ---------------------------------------------------------------------------
    def add_adapter(self, name: str, path: str) -> None:
        """Load a PEFT adapter onto the shared base model under `name`."""
        from peft import PeftModel

        with self._lock:
            if self.adapters.get(name) == path:
                return
            if isinstance(self.model, PeftModel):
                if name in self.adapters:  # same name, another folder (another corpus): replace it
                    self.model.delete_adapter(name)
                self.model.load_adapter(path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
            # PEFT keeps a bf16 model's adapters in fp32; its mixed-adapter batches (the chat) round
            # each adapter's output to bf16 before adding it, its one-adapter batches after: in the
            # engine's dtype both paths add the same numbers. Only the adapter's weights are cast:
            # model.to() would also round buffers kept in fp32 on purpose (RoPE's inv_freq).
            for param_name, param in self.model.named_parameters():
                if f".{name}." in param_name:
                    param.data = param.data.to(self.dtype)
            self.model.eval()
            self.adapters[name] = path

    @contextlib.contextmanager
    def using(self, adapter: str | None):
        """Route the forward pass through `adapter`, or through the bare base model when None."""
        with self._lock:
            if not self.adapters:
                if adapter:
                    raise KeyError(f"adapter {adapter!r} is not loaded")
                yield
            elif adapter is None:
                with self.model.disable_adapter():
                    yield
            else:
                self.model.set_adapter(adapter)
                yield

    # -- prompts ----------------------------------------------------------------------------
    def render(self, messages: Messages) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- decoding ---------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, conversations: Sequence[Messages], adapter: str | None = None,
                 max_new_tokens: int | None = None, batch_size: int | None = None,
                 progress: bool | str = False) -> list[Generation]:
        """Greedy answers for many conversations, batched by similar length, in input order."""
        max_new = max_new_tokens or self.max_new_tokens
        plan = self.plan()
        bs = 1 if plan.alone else batch_size or self.batch_size
        prompts = [self.render(m) for m in conversations]
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        # One decoding per distinct prompt (and, within `reuse_answers`, per prompt ever seen): with
        # batch-invariant decoding a copy is the very answer a second decoding would give.
        source = self.adapters.get(adapter) if adapter else None
        keys = [(source, tuple(x), max_new) for x in ids]
        memo = self._memo if self._memo is not None else {}
        first: dict[tuple, int] = {}
        for i, k in enumerate(keys):
            if k not in memo:
                first.setdefault(k, i)
        todo = list(first.values())
        self.stats.reused += len(ids) - len(todo)
        self.stats.alone += len(todo) if plan.alone else 0
        # Sorting by length keeps left padding (wasted compute) small within each batch.
        order = sorted(todo, key=lambda i: len(ids[i]), reverse=True)
        bar = tqdm(total=len(ids), desc=progress if isinstance(progress, str) else "generating",
                   disable=not progress, unit="q")
        bar.update(len(ids) - len(todo))
        with self.using(adapter), self.decoding_threads(plan):
            start = 0
            while start < len(order):
                size = bs  # the first (longest) prompt sets the batch's width: at most batch_tokens in all
                if self.batch_tokens:
                    size = max(1, min(bs, self.batch_tokens // len(ids[order[start]])))
                batch, start = order[start:start + size], start + size
                for i, gen in zip(batch, self._generate_batch([ids[i] for i in batch], max_new, plan.rows)):
                    memo[keys[i]] = gen
                bar.update(len(batch))
        bar.close()
        return [memo[k] for k in keys]

    @contextlib.contextmanager
    def batched(self, batch_size: int, batch_tokens: int | None = None) -> Iterator[None]:
        """Within: `generate` decodes up to `batch_size` prompts together by default, and no more
        than fit `batch_tokens` padded prompt tokens (long prompts: fewer rows)."""
        saved = self.batch_size, self.batch_tokens
        self.batch_size, self.batch_tokens = batch_size, batch_tokens
        try:
            yield
        finally:
            self.batch_size, self.batch_tokens = saved

    @contextlib.contextmanager
    def reuse_answers(self) -> Iterator[None]:
        """Within: a prompt already answered through the same adapter (same weights' folder) with the
        same length limit is not decoded again but answered with the same Generation. The evaluation
        uses it across variants: e.g. `rag` with its gate open sends `prompted`'s very prompt for every
        question its retrieval declines. Only for batch-invariant decoding, where it changes nothing."""
        saved = self._memo
        if self._memo is None and self.batch_invariant:
            self._memo = {}
        try:
            yield
        finally:
            self._memo = saved

    def _generate_batch(self, batch_ids: list[list[int]], max_new: int, floor: int) -> list[Generation]:
        n = len(batch_ids)
        rows = self._fill(batch_ids, floor)
        t0 = time.perf_counter()
        tokens = self._decode(rows, max_new, keep=n, floor=floor) if not self._processors(max_new) else \
            self._decode_with_generate(rows, max_new, keep=n)
        elapsed = time.perf_counter() - t0
        gens = []
        for row, prompt in zip(tokens, batch_ids):
            text = self.tokenizer.decode(row, skip_special_tokens=True).strip()
            gens.append(Generation(text, len(prompt), len(row), elapsed, n))
        return gens

    def _processors(self, max_new: int) -> list:
        """The logits processors `model.generate` would apply to greedy decoding under the model's
        generation config (none for the default model: a config may add e.g. suppress_tokens)."""
        config = copy.deepcopy(self.model.generation_config)
        config.update(do_sample=False, max_new_tokens=max_new, pad_token_id=self.tokenizer.pad_token_id)
        return list(self.model._get_logits_processor(generation_config=config, device=self.device))

    def _left_pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids left-padded to the longest row, and the attention mask that hides the padding."""
        pad, width = self.tokenizer.pad_token_id, max(len(x) for x in rows)
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in rows], device=self.device)
        return input_ids, mask

    def _decode_with_generate(self, rows: list[list[int]], max_new: int, keep: int) -> list[list[int]]:
        """`_decode` through `model.generate`, for generation configs whose logits processors the
        engine's own loop does not apply."""
        pad, stop = self.tokenizer.pad_token_id, self._stop_ids()
        input_ids, mask = self._left_pad(rows)
        width = input_ids.size(1)
        out = self.model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new,
                                  do_sample=False, pad_token_id=pad)[:keep, width:].tolist()
        tokens = [row[:next((k for k, t in enumerate(row) if t in stop), len(row))] for row in out]
        self.stats.answers += keep
        self.stats.tokens += sum(map(len, tokens))
        self.stats.row_steps += len(rows) * (out and len(out[0]) or 0)
        return tokens

    def _decode(self, rows: list[list[int]], max_new: int, keep: int, floor: int) -> list[list[int]]:
        """Greedy decoding of left-padded `rows`; the answer tokens (end-of-sequence excluded) of the
        first `keep` rows, the rest being fillers.

        The same forward passes as `model.generate` (same positions, cache contents and attention),
        minus its per-step bookkeeping: the KV cache is written into buffers sized for the whole
        answer instead of re-concatenated at each step, and rows that are done leave the batch (never
        below `floor`, the plan's row count, which keeps every remaining row's numbers those of a lone
        question).
        """
        stop = self._stop_ids()
        input_ids, prompt_mask = self._left_pad(rows)
        width = input_ids.size(1)
        mask = torch.cat([prompt_mask, prompt_mask.new_ones(len(rows), max_new)], dim=1)  # the answer's slots
        # generate()'s positions: counted over real tokens, padding at 1 (never attended).
        positions = (mask[:, :width].cumsum(-1) - 1).masked_fill(mask[:, :width] == 0, 1)
        cache = _preallocated_cache(self.model, width + max_new)
        cache_arg = cache_argument(self.model)
        live = list(range(len(rows)))  # the caller's row each batch row decodes
        out: list[list[int]] = [[] for _ in rows]
        done = [i >= keep for i in range(len(rows))]  # fillers are never reported
        length, step_ids = width, input_ids
        for step in range(max_new):
            self.stats.row_steps += len(live)
            logits = self.model(input_ids=step_ids, attention_mask=mask[:, :length], position_ids=positions,
                                use_cache=True, logits_to_keep=1, **{cache_arg: cache}).logits
            next_ids = logits[:, -1].argmax(-1)
            for b, t in zip(live, next_ids.tolist()):
                if done[b]:
                    continue
                if t in stop:
                    done[b] = True
                else:
                    out[b].append(t)
            if all(done[b] for b in live) or step == max_new - 1:
                break
            length += 1
            positions = positions[:, -1:] + 1
            step_ids = next_ids[:, None]
            # Drop finished rows once a quarter of the batch is done (each drop copies the cache).
            going = [j for j, b in enumerate(live) if not done[b]]
            if len(live) - max(len(going), floor) >= max(1, len(live) // 4):
                kept = going + [j for j, b in enumerate(live) if done[b]][:max(0, floor - len(going))]
                kept.sort()
                index = torch.tensor(kept, device=self.device)
                cache.batch_select_indices(index)
                mask, positions, step_ids = mask[index], positions[index], step_ids[index]
                live = [live[j] for j in kept]
        self.stats.answers += keep
        self.stats.tokens += sum(map(len, out[:keep]))
        return out[:keep]

    def _stop_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos])
        ids.add(self.tokenizer.eos_token_id)
        ids.discard(None)
        return ids

    def stream(self, messages: Messages, adapter: str | None = None,
               max_new_tokens: int | None = None) -> Iterator[str]:
        """Yield the answer text as it grows, token by token (for the chat): one row of `stream_many`,
        so it decodes exactly like `generate`."""
        for rows in self.stream_many([messages], [adapter], max_new_tokens):
            yield rows[0].text

    def stream_many(self, conversations: Sequence[Messages], adapters: Sequence[str | None] | None = None,
                    max_new_tokens: int | None = None,
                    stop_rows: Callable[[], Sequence[bool]] | None = None) -> Iterator[list[StreamRow]]:
        """Decode several conversations as one batch, each through its own adapter (PEFT mixed-adapter
        batch), yielding every row's text so far after each step: the chat's columns grow together,
        and a batch of N costs far less than N streams one after another (except where no row count
        is batch-invariant: then the rows are decoded in turn, `_stream_in_turn`).

        `stop_rows`, when given, is polled at every step: a row it flags True stops there (marked
        done, no further tokens), so a server can free the row of a client that went away; the batch
        ends once every row is done."""
        adapters = list(adapters) if adapters is not None else [None] * len(conversations)
        if any(adapters) and not self.adapters:
            raise KeyError(f"adapters {sorted(set(filter(None, adapters)))} are not loaded")
        plan = self.plan()
        if plan.alone and len(conversations) > 1:
            yield from self._stream_in_turn(conversations, adapters, max_new_tokens, stop_rows)
            return
        n = len(conversations)
        pad = self.tokenizer.pad_token_id
        ids = [self.tokenizer(self.render(m), add_special_tokens=False)["input_ids"] for m in conversations]
        source = list(range(n))  # the caller's row each decoded row copies (fillers copy a real row)
        # PEFT runs each adapter on its own rows only: fill every adapter's group, not just the batch.
        for adapter in dict.fromkeys(adapters if self.adapters else [None]):
            rows = [i for i, a in enumerate(adapters[:n]) if a == adapter or not self.adapters]
            extra_rows = self._fill(rows, plan.rows)[len(rows):]
            ids += [ids[i] for i in extra_rows]
            adapters += [adapters[i] for i in extra_rows]
            source += extra_rows
        if stop_rows is not None:  # a filler row stops with the row it copies
            stop_rows = _rows_of(stop_rows, source)
        input_ids, mask = self._left_pad(ids)
        # PEFT routes each row through its adapter, "__base__" being the bare model.
        extra = {"adapter_names": [a or "__base__" for a in adapters]} if self.adapters else {}
        streamer = _BatchStreamer(self.tokenizer, len(ids), self._stop_ids(), stop_rows, keep=n)
        if stop_rows is not None:
            extra["stopping_criteria"] = StoppingCriteriaList([_RowStop(stop_rows)])
        error: list[BaseException] = []

        def work() -> None:
            try:
                with self._lock, self.decoding_threads(plan), torch.inference_mode():
                    self.model.generate(input_ids=input_ids, attention_mask=mask, do_sample=False,
                                        max_new_tokens=max_new_tokens or self.max_new_tokens,
                                        pad_token_id=pad, streamer=streamer, **extra)
            except BaseException as e:  # surfaced to the caller below
                error.append(e)
            finally:
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        yield from streamer
        thread.join()
        if error:
            raise error[0]

    def _stream_in_turn(self, conversations: Sequence[Messages], adapters: list[str | None],
                        max_new_tokens: int | None,
                        stop_rows: Callable[[], Sequence[bool]] | None) -> Iterator[list[StreamRow]]:
        """`stream_many` where no row count is batch-invariant (`plan().alone`): each conversation is
        decoded on its own, one after another, so every row is the lone question's answer; the
        columns fill in turn instead of together."""
        rows = [StreamRow("", 0, False) for _ in conversations]
        for i, (messages, adapter) in enumerate(zip(conversations, adapters)):
            if stop_rows is not None and stop_rows()[i]:  # its client left before its turn
                rows[i] = StreamRow("", 0, True)
                yield list(rows)
                continue
            flag = (lambda i=i: [stop_rows()[i]]) if stop_rows is not None else None
            for (row,) in self.stream_many([messages], [adapter], max_new_tokens, flag):
                rows[i] = row
                yield list(rows)


class _PreallocatedLayer(DynamicLayer):
    """A KV cache layer written into buffers sized for the whole answer: `DynamicLayer` copies the
    whole cache at every step (torch.cat), a cost that grows with batch x prompt length. Returns
    views of the same values, so attention reads the same numbers."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            b, h, _, d = key_states.shape
            self.device = key_states.device
            self._keys = key_states.new_empty(b, h, self.capacity, d)
            self._values = value_states.new_empty(b, h, self.capacity, value_states.shape[-1])
            self.is_initialized = True
        n = key_states.shape[-2]
        self._keys[:, :, self.length:self.length + n] = key_states
        self._values[:, :, self.length:self.length + n] = value_states
        self.length += n
        self.keys, self.values = self._keys[:, :, :self.length], self._values[:, :, :self.length]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self.keys, self.values = self._keys[:, :, :self.length], self._values[:, :, :self.length]


def _preallocated_cache(model: PreTrainedModel, capacity: int) -> DynamicCache:
    cache = DynamicCache(config=model.config)
    cache.layers = [_PreallocatedLayer(capacity) for _ in cache.layers]
    return cache


class StreamRow(NamedTuple):
    text: str  # decoded so far
    tokens: int  # generated so far, end-of-sequence excluded
    done: bool  # reached end-of-sequence (rows cut at max_new_tokens end with the stream)


def _rows_of(stop_rows: Callable[[], Sequence[bool]], source: list[int]) -> Callable[[], list[bool]]:
    """The caller's per-row stop flags spread over the decoded rows (row i copies caller row source[i])."""
    def flags() -> list[bool]:
        caller = list(stop_rows())
        return [caller[i] for i in source]
    return flags


class _RowStop(StoppingCriteria):
    """Ends the rows a caller flags (per-row booleans: generate() pads them from then on)."""

    def __init__(self, stop_rows: Callable[[], Sequence[bool]]):
        self.stop_rows = stop_rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.tensor(list(self.stop_rows()), dtype=torch.bool, device=input_ids.device)


class _BatchStreamer(BaseStreamer):
    """Collects a batch's new tokens row by row (transformers' text streamers take one row only)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, rows: int, stop_ids: set[int],
                 stop_rows: Callable[[], Sequence[bool]] | None = None, keep: int | None = None):
        self.tokenizer = tokenizer
        self.keep = rows if keep is None else keep  # the first rows are reported, the rest fill the batch
        self.stop_ids = stop_ids
        self.stop_rows = stop_rows
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.done = [False] * rows
        self.queue: queue.Queue = queue.Queue()
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() hands over the prompt first
            self.prompt_seen = True
            return
        stopped = list(self.stop_rows()) if self.stop_rows is not None else None
        for i, t in enumerate(value.reshape(-1).tolist()):
            if stopped is not None and stopped[i]:
                self.done[i] = True  # flagged by the caller: this token and the padding after it are dropped
            if self.done[i]:
                continue
            if t in self.stop_ids:
                self.done[i] = True
            else:
                self.tokens[i].append(t)
        self.queue.put([StreamRow(self.tokenizer.decode(t, skip_special_tokens=True), len(t), d)
                        for t, d in zip(self.tokens[:self.keep], self.done[:self.keep])])

    def end(self) -> None:
        self.queue.put(None)

    def __iter__(self) -> Iterator[list[StreamRow]]:
        while (item := self.queue.get()) is not None:
            yield item
