"""The /metrics page as Prometheus reads it: every per-pipeline family rendered by Sentinel's fast path parses
back to exactly what was observed (cumulative buckets, _count equal to the +Inf bucket, awkward label values
escaped), matches what prometheus_client itself would print, is served whole over real HTTP (gzip when
asked), and a pipeline's run counters exist at 0 before its first run finishes."""

from __future__ import annotations

import gc
import gzip
import random
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sentinel.clock import FrozenClock
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.metrics import CHUNK_BYTES, Metrics
from sentinel.model import PipelineInfo, PollResult, RunState, RunUpdate, SourceHealth
from sentinel.web.metrics_page import accepts_gzip

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
# Label values a scheduler may really hand us: quotes, backslashes, newlines, non-ASCII, a bucket bound.
AWKWARD = ["plain", 'say "hi"', "back\\slash", "two\nlines", "données_ü", "60", ""]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(page: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(page):
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def observations() -> dict[tuple[str, str], list[float]]:
    rng = random.Random(7)
    obs: dict[tuple[str, str], list[float]] = {}
    for i, name in enumerate(AWKWARD):
        # Values on the bounds themselves (`le` is inclusive), between them, and beyond the last one.
        values = [float(b) for b in BUCKETS[i::3]] + [rng.uniform(0, 100_000) for _ in range(20)] + [1e6]
        obs[("src", name)] = values
    return obs


def test_page_parses_back_to_what_was_observed() -> None:
    metrics = Metrics()
    obs = observations()
    for (source, pipeline), values in obs.items():
        child = metrics.pipeline_run_duration.labels(source, pipeline)
        for v in values:
            child.observe(v)
        metrics.pipeline_runs.labels(source, pipeline, "success").inc(len(values))
    got = samples(metrics.render().decode())

    name = "sentinel_pipeline_run_duration_seconds"
    for (source, pipeline), values in obs.items():
        labels = {"source": source, "pipeline": pipeline}
        previous = 0.0
        for bound in [*BUCKETS, float("inf")]:
            le = "+Inf" if bound == float("inf") else f"{float(bound)}"
            count = got[(f"{name}_bucket", frozenset({**labels, "le": le}.items()))]
            assert count == sum(1 for v in values if v <= bound), (pipeline, le)
            assert count >= previous  # cumulative
            previous = count
        assert got[(f"{name}_count", frozenset(labels.items()))] == previous == len(values)
        assert got[(f"{name}_sum", frozenset(labels.items()))] == pytest.approx(sum(values))
        runs = frozenset({**labels, "state": "success"}.items())
        assert got[("sentinel_pipeline_runs_total", runs)] == len(values)


def test_page_matches_prometheus_client_line_for_line() -> None:
    """Same names, labels, values and HELP/TYPE lines as prometheus_client's own exposition."""
    metrics = Metrics()
    ref = CollectorRegistry()
    hist = Histogram(
        "sentinel_pipeline_run_duration_seconds",
        "Duration of finished pipeline runs.",
        ["source", "pipeline"],
        buckets=BUCKETS,
        registry=ref,
    )
    runs = Counter(
        "sentinel_pipeline_runs_total", "Finished pipeline runs, by final state.", ["source", "pipeline", "state"]
    )
    ref.register(runs)
    for (source, pipeline), values in observations().items():
        for v in values:
            hist.labels(source, pipeline).observe(v)
            metrics.pipeline_run_duration.labels(source, pipeline).observe(v)
        runs.labels(source, pipeline, "failed").inc(3)
        metrics.pipeline_runs.labels(source, pipeline, "failed").inc(3)
    page = metrics.render().decode()
    expected = generate_latest(ref).decode()
    for line in expected.splitlines():
        if "_sum{" in line:  # float sums of the same values added in the same order: equal, but compare as floats
            name, _, value = line.rpartition(" ")
            ours = next(x for x in page.splitlines() if x.startswith(name + " "))
            assert float(ours.rpartition(" ")[2]) == pytest.approx(float(value))
        else:
            assert line in page, line


def test_page_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: apt-get install prometheus (tests/run.sh does)"
    metrics = Metrics()
    for (source, pipeline), values in observations().items():
        for v in values:
            metrics.pipeline_run_duration.labels(source, pipeline).observe(v)
    out = subprocess.run(
        [promtool, "check", "metrics"], input=metrics.render().decode(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr


def test_accept_encoding() -> None:
    assert accepts_gzip("gzip")
    assert accepts_gzip("deflate, GZIP;q=0.5")
    assert not accepts_gzip("gzip;q=0")
    assert not accepts_gzip("identity")
    assert not accepts_gzip("")


CONFIG = """\
receivers: [{name: none, console: true}]
route: {receiver: none}
store: {path: state.db}
server: {listen: "127.0.0.1:0"}
"""


def finished(pipeline: str, state: RunState, ended: datetime, seconds: int) -> RunUpdate:
    started = ended - timedelta(seconds=seconds)
    return RunUpdate(
        source="af",
        pipeline=pipeline,
        run_id=f"{pipeline}-{ended.isoformat()}",
        state=state,
        scheduled_for=started,
        started_at=started,
        ended_at=ended,
        updated_at=ended,
    )


def result(runs: list[RunUpdate], infos: tuple[PipelineInfo, ...] = ()) -> PollResult:
    health = SourceHealth(source="af", reachable=True, observed_at=NOW)
    return PollResult(source="af", health=health, runs=tuple(runs), pipelines_partial=infos)


async def test_served_page_streams_in_chunks_plain_and_gzip(tmp_path: Path) -> None:
    (tmp_path / "sentinel.yaml").write_text(CONFIG)
    d = Daemon(load_config(tmp_path / "sentinel.yaml"), clock=FrozenClock(NOW))
    await d.start()
    try:
        runs = []
        for i in range(400):  # enough series for a page of many chunks
            for k, state in enumerate((RunState.FAILED, RunState.SUCCESS)):
                runs.append(finished(f"p{i:03d}", state, NOW - timedelta(hours=2 - k), 30 + i * 9))
        await d.handle_result(result(runs))
        expected = d.metrics.render()
        assert len(expected) > 10 * CHUNK_BYTES
        url = f"http://127.0.0.1:{d.web_port}/metrics"
        async with httpx.AsyncClient() as c:
            plain = await c.get(url, headers={"Accept-Encoding": "identity"})
            assert plain.status_code == 200
            assert plain.headers["Content-Type"].startswith("text/plain; version=")
            assert "Content-Encoding" not in plain.headers
            assert plain.content == expected
            async with c.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as zipped:
                assert zipped.headers["Content-Encoding"] == "gzip"
                wire = b"".join([part async for part in zipped.aiter_raw()])
            head = await c.head(url)
            assert head.status_code == 200 and head.content == b""
            # A scraper that gives up half way (its scrape_timeout) costs nothing lasting.
            async with c.stream("GET", url, headers={"Accept-Encoding": "identity"}) as aborted:
                async for _ in aborted.aiter_raw():
                    break
            again = await c.get(url, headers={"Accept-Encoding": "identity"})
            assert again.content == expected
        assert gc.isenabled()
        assert len(wire) < len(expected) / 5
        assert gzip.decompress(wire) == expected
        got = samples(expected.decode())
        labels = frozenset({"source": "af", "pipeline": "p007"}.items())
        assert got[("sentinel_pipeline_recovery_seconds_count", labels)] == 1
        assert got[("sentinel_pipeline_recovery_seconds_sum", labels)] == 3600
        assert got[("sentinel_pipeline_run_duration_seconds_count", labels)] == 2
    finally:
        await d.stop()


async def test_run_counters_exist_at_zero_before_the_first_run(tmp_path: Path) -> None:
    (tmp_path / "sentinel.yaml").write_text(CONFIG.replace('server: {listen: "127.0.0.1:0"}\n', ""))
    d = Daemon(load_config(tmp_path / "sentinel.yaml"), clock=FrozenClock(NOW), serve_http=False)
    await d.start()
    try:
        await d.handle_result(result([], infos=(PipelineInfo(source="af", pipeline="new"),)))
        got = samples((await d.metrics.render_async()).decode())
        for state in ("success", "failed"):
            labels = frozenset({"source": "af", "pipeline": "new", "state": state}.items())
            assert got[("sentinel_pipeline_runs_total", labels)] == 0, state
        await d.handle_result(result([finished("new", RunState.SUCCESS, NOW, 60)]))
        got = samples((await d.metrics.render_async()).decode())
        ok = frozenset({"source": "af", "pipeline": "new", "state": "success"}.items())
        failed = frozenset({"source": "af", "pipeline": "new", "state": "failed"}.items())
        assert (got[("sentinel_pipeline_runs_total", ok)], got[("sentinel_pipeline_runs_total", failed)]) == (1, 0)
    finally:
        await d.stop()
