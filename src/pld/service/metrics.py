"""Prometheus text exposition (format 0.0.4), written by hand.

Why not ``prometheus_client``: its default registry is process-global, so two apps in one
process (every test builds its own) would share or collide on series; a per-app registry needs
the same plumbing as this file, which is four small types and one renderer. The format is
stable and small: ``# HELP``/``# TYPE`` lines, one sample per line, cumulative histogram buckets
with ``le`` labels ending at ``+Inf``, then ``_sum`` and ``_count``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

LabelValues = tuple[str, ...]


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)

    def _key(self, labels: Sequence[str]) -> LabelValues:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(v) for v in labels)

    def header(self) -> list[str]:
        """The ``# HELP`` and ``# TYPE`` lines that must precede a metric's samples."""
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:
        """The metric's sample lines in exposition format, one per series (a histogram: its
        buckets, ``_sum`` and ``_count``), in a stable order so scrapes diff cleanly."""
        raise NotImplementedError


class Counter(_Metric):
    """A count that only goes up, one series per set of label values. An unlabelled counter is
    exported as 0 before its first increment, so rates over it start from the first scrape."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        """Add ``amount`` to the series ``labels`` names (one value per label name)."""
        k = self._key(labels)
        self._values[k] = self._values.get(k, 0.0) + amount

    def value(self, *labels: str) -> float:
        """The current value of one series (0 before its first ``inc``), so tests can read it."""
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        if not self.labelnames and not self._values:
            return [f"{self.name} 0"]  # an unlabelled counter exists from the start
        return [
            f"{self.name}{_labels(self.labelnames, k)} {_num(v)}"
            for k, v in sorted(self._values.items())
        ]


class Gauge(_Metric):
    """A gauge read at scrape time, so it can never go stale."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        super().__init__(name, help_text)
        self._read = read

    def samples(self) -> list[str]:
        return [f"{self.name} {_num(self._read())}"]


class Histogram(_Metric):
    """Observations in fixed cumulative buckets, with sum and count, as Prometheus expects, so
    percentiles can be estimated on the scraping side."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        buckets: Sequence[float],
        labelnames: Sequence[str] = (),
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(float(b) for b in buckets))
        self._counts: dict[LabelValues, list[int]] = {}
        self._sums: dict[LabelValues, float] = {}

    def observe(self, value: float, *labels: str) -> None:
        """Count ``value`` in its bucket of the series named by ``labels``."""
        k = self._key(labels)
        counts = self._counts.setdefault(k, [0] * (len(self.buckets) + 1))
        for i, b in enumerate(self.buckets):
            if value <= b:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
        self._sums[k] = self._sums.get(k, 0.0) + value

    def count(self, *labels: str) -> int:
        """How many observations one series has, so tests can read it."""
        return sum(self._counts.get(self._key(labels), []))

    def samples(self) -> list[str]:
        out: list[str] = []
        for k, counts in sorted(self._counts.items()):
            running = 0
            for b, c in zip((*self.buckets, math.inf), counts, strict=True):
                running += c
                le = f'le="{_num(b)}"'
                out.append(f"{self.name}_bucket{_labels(self.labelnames, k, le)} {running}")
            out.append(f"{self.name}_sum{_labels(self.labelnames, k)} {_num(self._sums[k])}")
            out.append(f"{self.name}_count{_labels(self.labelnames, k)} {running}")
        return out


class ServiceMetrics:
    """Every series the service exports. Gauges read the live queue, so the batcher and the
    app own the numbers and this class only names them."""

    def __init__(self, queue_depth: Callable[[], float], in_flight: Callable[[], float]) -> None:
        self.requests = Counter(
            "pld_http_requests_total", "HTTP requests by route and status.", ("route", "status")
        )
        self.latency = Histogram(
            "pld_http_request_duration_seconds",
            "Wall time from request start to response start, by route.",
            LATENCY_BUCKETS,
            ("route",),
        )
        self.items = Counter(
            "pld_classify_items_total", "Items answered, by outcome.", ("outcome",)
        )
        self.invalid = Counter(
            "pld_invalid_outputs_total",
            "Student replies that were not exactly one label (reported per item, never scored).",
        )
        self.engine_errors = Counter(
            "pld_engine_errors_total", "Micro-batches failed by the student engine."
        )
        self.rejected = Counter(
            "pld_queue_rejections_total", "Requests refused with 503 because the queue was full."
        )
        self.disconnects = Counter(
            "pld_client_disconnects_total", "Requests whose client left before the answer."
        )
        self.batch_size = Histogram(
            "pld_batch_size_items", "Items per micro-batch sent to the student.", BATCH_BUCKETS
        )
        self.queue_depth = Gauge(
            "pld_queue_depth_items", "Items waiting for a student slot.", queue_depth
        )
        self.in_flight = Gauge(
            "pld_in_flight_items", "Items being classified right now.", in_flight
        )

    def all(self) -> list[_Metric]:
        """Every series, in the order ``render`` exports them."""
        return [
            self.requests,
            self.latency,
            self.items,
            self.invalid,
            self.engine_errors,
            self.rejected,
            self.disconnects,
            self.batch_size,
            self.queue_depth,
            self.in_flight,
        ]

    def render(self) -> str:
        """The ``GET /metrics`` body in Prometheus text format 0.0.4."""
        lines: list[str] = []
        for m in self.all():
            lines += m.header() + m.samples()
        return "\n".join(lines) + "\n"
