"""Continuous batching for concurrent requests: they share one engine's decoding loop.

Callers `submit` a `Job` (chat messages, LoRA adapter, token limit, stop strings, sampling); a
scheduler thread runs the engine's decoding loop (decoding.py) with up to `max_batch` rows, each
through its own adapter. A queued job joins at the next step where a row is free, and every step
sends each job its growing text. A job ends on end-of-sequence, a stop string, its own
`max_new_tokens`, or `cancel()` (a client that went away): its row leaves at once and the next
queued job takes it. The queue is bounded: `submit` raises `QueueFull` instead of letting callers
pile up.

Used by `assistant serve` (assistant/serve/api.py); the Gradio app can use the same scheduler for
concurrent chat users.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from assistant.model.decoding import PREFILL_TOKENS, Decoder, Row
from assistant.model.engine import Engine, Messages
from assistant.model.sampling import GREEDY, Sampling

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """Too many requests are waiting; the caller should retry later (HTTP 429)."""


@dataclass
class Update:
    """A job's answer so far (raw decoded text: not stripped)."""

    text: str
    tokens: int
    done: bool = False
    finish_reason: str | None = None  # stop | length | cancelled | error
    error: str | None = None
    batch_size: int = 0  # rows in the decoding step that produced this update


@dataclass
class Job:
    messages: Messages
    adapter: str | None = None
    max_new_tokens: int = 64
    stop: Sequence[str] = ()
    sampling: Sampling = GREEDY  # greedy, or seeded sampling with the request's own generator
    on_update: Callable[[Update], None] = lambda u: None
    cancelled: threading.Event = field(default_factory=threading.Event)
    result: Update | None = None  # the final update, once done

    def cancel(self) -> None:
        self.cancelled.set()


def cut_at_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop string in `text`, or None."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


# When a job wakes an idle scheduler, it waits up to this long for another one before the burst's
# first prefill, again after each that comes, GATHER_MOST times as long at most in all: clients that
# send at the same moment then share one prefill instead of the first one's prefill (and a step)
# holding up all the others'. Measured on a 2-core Intel Xeon (bf16, `bench/serve_load.py
# --clients 16`), where the HTTP side hands the scheduler a request every ~3 ms: without it the
# first request was prefilled alone (83 ms) and a step ran before the other 15 joined; with it all
# 16 share one. A lone request waits GATHER_MS once (under 1% of its ~1.2 s). Nothing waits while
# rows are decoding.
GATHER_MS = 10.0
GATHER_MOST = 10


class Scheduler:
    """Runs a shared engine's decoding loop over the queued jobs, on a thread of its own or on the
    caller's (`run`)."""

    def __init__(self, engine: Engine, max_batch: int = 16, max_queue: int = 64, thread: bool = True,
                 gather_ms: float = GATHER_MS):
        """`thread`: run the loop on a thread of its own, started now; else the caller runs it
        (`run`), e.g. on the main thread (see `run`). `gather_ms`: see GATHER_MS (0: none)."""
        self.engine = engine
        self.max_batch = max_batch  # a job joins the decoding loop at the next step
        self.gather_s = gather_ms / 1000
        self.pending: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self.batches: deque[int] = deque(maxlen=100_000)  # rows of every decoding step (load test, logs)
        self.admitted = 0  # jobs taken from the queue to decode (not those cancelled while queued)
        self._decoder: Decoder | None = None  # the current burst's decoding loop
        self._held: tuple[Row, Job] | None = None  # taken from the queue, joins at the next step
        self.finished: deque[tuple[str, int]] = deque(maxlen=1024)  # (finish_reason, tokens) of recent jobs
        self._closed = False
        if thread:
            threading.Thread(target=self.run, name="batching", daemon=True).start()

    # -- submitting -------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        if self._closed:
            raise RuntimeError("the scheduler is closed")
        try:
            self.pending.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"{self.pending.maxsize} requests are already waiting; retry shortly") from None
        return job

    def stream(self, job: Job) -> Iterator[Update]:
        """Submit `job` now (QueueFull raised here) and return an iterator of its updates (blocking;
        for threads such as Gradio's). Closing the iterator early cancels the job."""
        q: queue.Queue[Update] = queue.Queue()
        job.on_update = q.put
        self.submit(job)

        def drain() -> Iterator[Update]:
            try:
                while True:
                    u = q.get()
                    yield u
                    if u.done:
                        return
            finally:
                job.cancel()  # a no-op once done; frees the row when the consumer stops early

        return drain()

    def astream(self, job: Job) -> AsyncIterator[Update]:
        """Submit `job` now (QueueFull raised here, before any response starts) and return an async
        iterator of its updates that never blocks the event loop."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[Update] = asyncio.Queue()

        def deliver(u: Update) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, u)
            except RuntimeError:  # the loop is gone: nobody listens any more
                job.cancel()

        job.on_update = deliver
        self.submit(job)

        async def drain() -> AsyncIterator[Update]:
            try:
                while True:
                    u = await q.get()
                    yield u
                    if u.done:
                        return
            finally:
                job.cancel()

        return drain()

    def close(self) -> None:
        self._closed = True
        try:
            self.pending.put_nowait(None)
        except queue.Full:
            pass

    # -- the scheduler thread ---------------------------------------------------------------
    def run(self) -> None:
        """Continuous batching, on the calling thread until `close` and every job has ended: queued
        jobs join the engine's decoding loop as soon as a row is free, and each step sends every
        live job its growing text.

        Best on the thread that loaded the model: libgomp (PyTorch's OpenMP on Linux) keeps a pool
        of worker threads per thread that ran a parallel region, and once there are more of them
        than cores its workers stop spinning between regions and sleep instead. Measured on a
        2-core Intel Xeon (bf16): a decoding step of one row took 56 ms on a second thread against
        30 ms on the main thread; a packed linear layer of one row, 3.5 ms against 0.8."""
        if not hasattr(self.engine, "decoder"):
            return self._relay()
        jobs: dict[Row, Job] = {}
        while self._admit(jobs):
            if not jobs:
                continue
            decoder = self._decoder
            rows = len(decoder.live)
            try:
                decoder.step()
            except Exception as e:
                log.exception("decoding a step of %d rows failed", rows)
                for row, job in jobs.items():
                    self._finish(job, Update(self._text(row), len(row.tokens), True, "error",
                                             f"{type(e).__name__}: {e}", batch_size=rows))
                jobs.clear()
                continue
            if rows:
                self.batches.append(rows)
            self._deliver(decoder, jobs, rows)

    def _relay(self) -> None:
        """An engine that decodes elsewhere (model.remote.RemoteEngine): each job streams through it
        on a thread of its own, and the engine bounds how many requests are in flight."""
        while True:
            job = self.pending.get()
            if job is None:
                self._closed = True
                return
            if job.cancelled.is_set():
                self._finish(job, Update("", 0, True, "cancelled"))
                continue
            self.admitted += 1
            threading.Thread(target=self._relay_job, args=(job,), daemon=True, name="relay").start()

    def _relay_job(self, job: Job) -> None:
        text, tokens, reason = "", 0, "length"
        try:
            for rows in self.engine.stream_many([job.messages], [job.adapter], job.max_new_tokens,
                                                stop_rows=lambda: [job.cancelled.is_set()], samplings=[job.sampling]):
                text, tokens, ended = rows[0]
                cut = cut_at_stop(text, job.stop)
                if cut is not None:
                    text, tokens, reason = text[:cut], self.engine.count_tokens(text[:cut]), "stop"
                    break
                if ended:
                    reason = "stop"
                job.on_update(Update(text, tokens, batch_size=1))
            if job.cancelled.is_set():
                reason = "cancelled"
            self._finish(job, Update(text, tokens, True, reason, batch_size=1))
        except Exception as e:
            log.exception("relaying a job failed")
            self._finish(job, Update(text, tokens, True, "error", f"{type(e).__name__}: {e}"))

    def _admit(self, jobs: dict[Row, Job]) -> bool:
        """Move queued jobs into free rows, waiting for one when nothing is decoding; False once the
        scheduler is closed and every job has ended.

        Newcomers are prefilled together (Decoder.admit), at most PREFILL_TOKENS prompt tokens to
        compute between two steps (at least one job; chunks in the prefix cache are copied, so they
        do not count): a burst of long prompts joins over a few steps instead of stopping the live
        rows for all of its prefill at once. A burst that wakes an idle scheduler first waits for
        the jobs sent with its first one (GATHER_MS)."""
        joining: dict[Row, Job] = {}
        tokens, until = 0, None
        while not (jobs or joining) or self._decoder.has_room(None, list(joining)):
            if self._held is not None:
                (row, job), self._held = self._held, None
            else:
                try:
                    if not (jobs or joining) and not self._closed:
                        job = self.pending.get()  # idle: until a job comes
                        until = time.monotonic() + GATHER_MOST * self.gather_s
                    elif not jobs and self.gather_s and until and not self._closed:
                        # a burst begins: its company, if it comes at once (GATHER_MS)
                        job = self.pending.get(timeout=max(0.0, min(self.gather_s, until - time.monotonic())))
                    else:
                        job = self.pending.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._closed = True
                    continue
                if job.cancelled.is_set():  # gave up while queued: never decoded
                    self._finish(job, Update("", 0, True, "cancelled"))
                    continue
                try:
                    row = self.engine.row(job.messages, job.adapter, job.max_new_tokens, job.sampling,
                                          stopped=job.cancelled.is_set)
                    self.engine.adapter_kwargs([row.adapter])  # an unknown adapter fails this job alone
                except Exception as e:
                    log.exception("starting a job failed")
                    self._finish(job, Update("", 0, True, "error", f"{type(e).__name__}: {e}"))
                    continue
            new = self.engine.to_prefill(row)  # chunks another prompt computed are copied, not computed
            if joining and tokens + new > PREFILL_TOKENS:
                self._held = (row, job)
                break
            if not (jobs or joining):  # a burst begins: a fresh plan (adapters may have been loaded since) and cache
                self._decoder = self.engine.decoder(self.max_batch)
            self.admitted += 1
            joining[row] = job
            tokens += new
        if joining:
            try:
                self._decoder.admit(list(joining))
            except Exception as e:
                log.exception("prefilling %d jobs failed", len(joining))
                for row, job in joining.items():
                    if row in self._decoder.live:
                        self._decoder.drop(row, "error")
                    self._finish(job, Update("", 0, True, "error", f"{type(e).__name__}: {e}"))
                joining.clear()
            jobs.update(joining)
        return bool(jobs) or self._held is not None or not self._closed

    def _deliver(self, decoder: Decoder, jobs: dict[Row, Job], rows: int) -> None:
        """Each job's update after a step; jobs that ended (end-of-sequence, a stop string, their
        token limit, a cancel) leave, and their rows are freed for the next queued job."""
        for row, job in list(jobs.items()):
            text, tokens, reason = self._text(row), len(row.tokens), row.reason
            cut = cut_at_stop(text, job.stop)
            if cut is not None:
                text, reason = text[:cut], "stop"
                tokens = self.engine.count_tokens(text)
            update = Update(text, tokens, reason is not None, reason, batch_size=rows)
            if reason:
                decoder.drop(row, reason)
                del jobs[row]
                self._finish(job, update)
                continue
            try:
                job.on_update(update)
            except Exception:
                log.exception("delivering an update failed")
                job.cancel()

    def _text(self, row: Row) -> str:
        return self.engine.tokenizer.decode(row.tokens, skip_special_tokens=True)

    def _finish(self, job: Job, update: Update) -> None:
        job.result = update
        self.finished.append((update.finish_reason or "", update.tokens))
        try:
            job.on_update(update)
        except Exception:  # a consumer's callback must not stop the other rows
            log.exception("delivering a final update failed")
