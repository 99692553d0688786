"""Prometheus text exposition for the families with a series per pipeline, built for 10,000+ pipelines.

prometheus_client renders a sample as a `Sample` tuple, a sorted label dict and an escaped-label join, per
line, and the whole page as one `''.join(...).encode()`: at 10,000 pipelines (~400,000 lines) that costs
seconds of CPU and one long GIL-holding C call. Here each series keeps its escaped label text, made once
when the series is created, and plain numbers updated on observe; a scrape formats lines with string
concatenation and hands them out as text pieces of a few hundred lines, which `Metrics.page` packs into
~64-128 KB chunks, so no single call holds the GIL for long.

The families are still registered in the prometheus_client registry (`collect()` gives ordinary metric
families), so `registry.get_sample_value` and anything listing the registry see them; only the page is
rendered here. A series is never removed (labels are bounded: one per pipeline), and no `_created` series.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

fmt = floatToGoString
# Lines per text piece (~50 KB); `Metrics.page` packs pieces into chunks of at least CHUNK_BYTES.
PIECE_LINES = 500


@runtime_checkable
class Streamed(Protocol):
    """A collector whose page text is produced by `exposition()` rather than by prometheus_client."""

    def exposition(self) -> Iterator[str]: ...


def escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def label_text(names: Sequence[str], values: Sequence[str]) -> str:
    """`a="x",b="y"`: the inside of a sample's braces, sorted by label name as prometheus_client does."""
    return ",".join(f'{n}="{escape(v)}"' for n, v in sorted(zip(names, values, strict=True)))


def header(name: str, documentation: str, kind: str) -> str:
    doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


def pieces(lines: Iterable[str]) -> Iterator[str]:
    """Joins lines into pieces of PIECE_LINES lines."""
    buf: list[str] = []
    for line in lines:
        buf.append(line)
        if len(buf) >= PIECE_LINES:
            yield "".join(buf)
            buf = []
    if buf:
        yield "".join(buf)


class _CounterChild:
    __slots__ = ("labels", "value")

    def __init__(self, labels: str) -> None:
        self.labels = labels
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        self.value += amount


class CounterFamily:
    """A labelled counter with prometheus_client's `labels(...).inc()` API. `name` without `_total`."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.children: dict[tuple[str, ...], _CounterChild] = {}

    def labels(self, *values: str) -> _CounterChild:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = _CounterChild(label_text(self.labelnames, values))
        return child

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self.children.items()):
            fam.add_metric(list(values), child.value)
        yield fam

    def exposition(self) -> Iterator[str]:
        name = f"{self.name}_total"
        yield header(name, self.documentation, "counter")
        pre = name + "{"
        yield from pieces(f"{pre}{c.labels}}} {fmt(c.value)}\n" for c in list(self.children.values()))


class _HistogramChild:
    __slots__ = ("bounds", "counts", "head", "labels", "sum", "tail")

    def __init__(self, names: Sequence[str], values: Sequence[str], bounds: tuple[float, ...]) -> None:
        self.labels = label_text(names, values)
        # The bucket lines' labels, sorted with `le` among them: those before it and those after it.
        pairs = sorted(zip(names, values, strict=True))
        self.head = "".join(f'{n}="{escape(v)}",' for n, v in pairs if n < "le")
        self.tail = "".join(f',{n}="{escape(v)}"' for n, v in pairs if n > "le")
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not cumulative; the last bound is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # `le` is inclusive: the first bound >= value.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class HistogramFamily:
    """A labelled histogram with prometheus_client's `labels(...).observe()` API and the same `le` text."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        bounds = sorted(float(b) for b in buckets)
        if bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        self.bounds = tuple(bounds)
        self.children: dict[tuple[str, ...], _HistogramChild] = {}

    def labels(self, *values: str) -> _HistogramChild:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = _HistogramChild(self.labelnames, values, self.bounds)
        return child

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        fam = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self.children.items()):
            counts = list(child.counts)
            cumulative, acc = [], 0
            for le, n in zip(self.bounds, counts, strict=True):
                acc += n
                cumulative.append((fmt(le), float(acc)))
            fam.add_metric(list(values), cumulative, child.sum)
        yield fam

    def exposition(self) -> Iterator[str]:
        yield header(self.name, self.documentation, "histogram")
        yield from pieces(self._lines())

    def _lines(self) -> Iterator[str]:
        bucket, count, total = self.name + "_bucket{", self.name + "_count{", self.name + "_sum{"
        les = [f'le="{fmt(b)}"' for b in self.bounds]
        for child in list(self.children.values()):
            labels, head, tail = child.labels, bucket + child.head, child.tail + "} "
            # One copy, so the buckets, _count and the +Inf bucket agree even if the loop observes meanwhile.
            counts = list(child.counts)
            acc = 0
            for le, n in zip(les, counts, strict=True):
                acc += n
                yield f"{head}{le}{tail}{acc}.0\n"
            yield f"{count}{labels}}} {acc}.0\n"
            yield f"{total}{labels}}} {fmt(child.sum)}\n"


class GaugeSpec:
    """A gauge family computed at scrape time: its header, and its metric family for `collect()`."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.header = header(name, documentation, "gauge")
        self.prefix = name + "{"

    def family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
