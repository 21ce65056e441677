"""What `assistant serve` tells an operator: `/metrics` in Prometheus text and one access-log line a request.

No Prometheus client library is installed in this project (only `opentelemetry-api`, which has no
exporter), so the text exposition format (version 0.0.4) is written here: counters, one gauge
and histograms, which is all a scraper needs from this server.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Sequence

access_log = logging.getLogger("assistant.access")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: a greedy answer on a CPU takes seconds to a minute, a GPU's well under one.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    escaped = (v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') for _, v in pairs)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(pairs, escaped)) + "}"


class _Histogram:
    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value

    def lines(self, name: str, labels: tuple[tuple[str, str], ...]) -> list[str]:
        out, running = [], 0
        for bound, count in zip([*map(_number, self.buckets), "+Inf"], self.counts):
            running += count
            out.append(f"{name}_bucket{_labels((*labels, ('le', bound)))} {running}")
        return out + [f"{name}_sum{_labels(labels)} {_number(self.sum)}", f"{name}_count{_labels(labels)} {running}"]


def _number(x: float) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


class Metrics:
    """Thread-safe counters and histograms for the chat endpoint, rendered on demand."""

    def __init__(self, queue_depth: Callable[[], int] = lambda: 0):
        self.queue_depth = queue_depth
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, str], int] = defaultdict(int)  # (path, model, status)
        self.tokens: dict[tuple[str, str], int] = defaultdict(int)  # (model, prompt|completion)
        self.latency: dict[str, _Histogram] = {}  # model -> whole request
        self.first_token: dict[str, _Histogram] = {}  # model -> time to the first streamed text

    def record(self, path: str, status: int, seconds: float, model: str | None = None,
               prompt_tokens: int = 0, completion_tokens: int = 0, first_token_s: float | None = None) -> None:
        model = model or ""
        with self._lock:
            self.requests[(path, model, str(status))] += 1
            if not model:
                return
            self.tokens[(model, "prompt")] += prompt_tokens
            self.tokens[(model, "completion")] += completion_tokens
            self.latency.setdefault(model, _Histogram(LATENCY_BUCKETS)).observe(seconds)
            if first_token_s is not None:
                self.first_token.setdefault(model, _Histogram(LATENCY_BUCKETS)).observe(first_token_s)

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP assistant_requests_total HTTP requests answered, by path, model and status code.",
                     "# TYPE assistant_requests_total counter"]
            lines += [f"assistant_requests_total{_labels((('path', p), ('model', m), ('code', c)))} {n}"
                      for (p, m, c), n in sorted(self.requests.items())]
            lines += ["# HELP assistant_tokens_total Tokens of chat completions, by model and kind.",
                      "# TYPE assistant_tokens_total counter"]
            lines += [f"assistant_tokens_total{_labels((('model', m), ('kind', k)))} {n}"
                      for (m, k), n in sorted(self.tokens.items())]
            lines += ["# HELP assistant_queue_depth Requests waiting for a decoding batch.",
                      "# TYPE assistant_queue_depth gauge", f"assistant_queue_depth {self.queue_depth()}"]
            for name, what, hists in (
                    ("assistant_request_duration_seconds", "Chat completion wall time, request to last byte.",
                     self.latency),
                    ("assistant_time_to_first_token_seconds", "Streamed chat completions: time to the first text.",
                     self.first_token)):
                lines += [f"# HELP {name} {what}", f"# TYPE {name} histogram"]
                for model, h in sorted(hists.items()):
                    lines += h.lines(name, (("model", model),))
        return "\n".join(lines) + "\n"
