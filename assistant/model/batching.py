"""Dynamic batching: concurrent requests share one engine, decoded together.

Callers `submit` a `Job` (chat messages, LoRA adapter, token limit, stop strings); a scheduler thread
takes whatever is queued (up to `max_batch`; after the first arrival it keeps collecting until no
request came for `wait_s`, at most `max_wait_s`)
and decodes it as one mixed-adapter batch with `Engine.stream_many`, sending each job its growing
text. A job ends on end-of-sequence, a stop string, its own `max_new_tokens`, or `cancel()` (a
client that went away): its row is flagged and the engine stops decoding it. Requests that arrive
while a batch runs wait for the next one (batch by batch, not continuous batching). The queue is
bounded: `submit` raises `QueueFull` instead of letting callers pile up.

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
    batch_size: int = 0  # rows decoded together with this one


@dataclass
class Job:
    messages: Messages
    adapter: str | None = None
    max_new_tokens: int = 64
    stop: Sequence[str] = ()
    sampling: Sampling = GREEDY
    on_update: Callable[[Update], None] = lambda u: None
    cancelled: threading.Event = field(default_factory=threading.Event)
    result: Update | None = None  # the final update, once done

    def cancel(self) -> None:
        self.cancelled.set()


def cut_at_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index of the earliest stop string in `text`, or None."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


class Scheduler:
    """One thread that feeds a shared engine with batches of queued jobs."""

    def __init__(self, engine: Engine, max_batch: int = 16, max_queue: int = 64, wait_s: float = 0.05,
                 max_wait_s: float = 0.5):
        self.engine = engine
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.max_wait_s = max_wait_s
        self.pending: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self.batches: list[int] = []  # size of every batch decoded (for the load test and logs)
        self.finished: deque[tuple[str, int]] = deque(maxlen=1024)  # (finish_reason, tokens) of recent jobs
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="batching", daemon=True)
        self._thread.start()

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
    def _loop(self) -> None:
        while True:
            first = self.pending.get()
            if first is None:
                return
            # Collect company until the queue has been quiet for wait_s, for at most max_wait_s: a
            # burst of clients lands in one batch instead of a small batch that the rest wait behind.
            batch = [first]
            cap = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    job = self.pending.get(timeout=max(0.0, min(self.wait_s, cap - time.monotonic())))
                except queue.Empty:
                    break
                if job is None:
                    self._closed = True
                    break
                batch.append(job)
            live = []
            for job in batch:
                if job.cancelled.is_set():  # gave up while queued: never decoded
                    self._finish(job, Update("", 0, True, "cancelled"))
                else:
                    live.append(job)
            if live:
                self._run(live)
            if self._closed:
                return

    def _finish(self, job: Job, update: Update) -> None:
        job.result = update
        self.finished.append((update.finish_reason or "", update.tokens))
        try:
            job.on_update(update)
        except Exception:  # a consumer's callback must not stop the other rows
            log.exception("delivering a final update failed")

    def _run(self, batch: list[Job]) -> None:
        n = len(batch)
        self.batches.append(n)
        ended = [False] * n
        last = [Update("", 0, batch_size=n) for _ in batch]

        def stop_rows() -> list[bool]:
            return [e or j.cancelled.is_set() for e, j in zip(ended, batch)]

        try:
            steps = self.engine.stream_many([j.messages for j in batch], [j.adapter for j in batch],
                                            max_new_tokens=max(j.max_new_tokens for j in batch),
                                            stop_rows=stop_rows)
            for rows in steps:
                for i, (job, row) in enumerate(zip(batch, rows)):
                    if ended[i]:
                        continue
                    if job.cancelled.is_set():
                        ended[i] = True
                        self._finish(job, Update(last[i].text, last[i].tokens, True, "cancelled", batch_size=n))
                        continue
                    text, tokens, reason = row.text, row.tokens, None
                    cut = cut_at_stop(text, job.stop)
                    if cut is not None:
                        text, reason = text[:cut], "stop"
                        tokens = self.engine.count_tokens(text)
                    elif row.done:
                        reason = "stop"
                    elif tokens >= job.max_new_tokens:
                        reason = "length"
                    last[i] = Update(text, tokens, reason is not None, reason, batch_size=n)
                    if reason:
                        ended[i] = True  # flags the row: the engine stops decoding it
                        self._finish(job, last[i])
                    else:
                        try:
                            job.on_update(last[i])
                        except Exception:
                            log.exception("delivering an update failed")
                            job.cancel()
            for i, job in enumerate(batch):  # the batch's max_new_tokens reached
                if not ended[i]:
                    ended[i] = True
                    self._finish(job, Update(last[i].text, last[i].tokens, True, "length", batch_size=n))
        except Exception as e:
            log.exception("decoding a batch of %d failed", n)
            for i, job in enumerate(batch):
                if not ended[i]:
                    ended[i] = True
                    self._finish(job, Update(last[i].text, last[i].tokens, True, "error",
                                             f"{type(e).__name__}: {e}", batch_size=n))
