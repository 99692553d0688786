"""Data volume from a source's `volume:`: what counts as a number, which runs are asked about, and that a
failing read leaves a run without a volume instead of failing the poll."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydantic import ValidationError

from adapters.airflow_api import AirflowApi
from adapters.airflow_volume import VOLUME_BUDGET, XcomVolumes
from adapters.http import PoliteClient
from adapters.prefect_http import PrefectApi
from adapters.prefect_volume import ArtifactVolumes
from adapters.volume import parse_volume
from sentinel.anomaly.baseline import volume_of
from sentinel.config import load_config
from sentinel.model import FrozenClock, RunState, RunUpdate, SourceSpec
from sentinel.yamlfile import ConfigError

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (1234, 1234.0),
        (12.5, 12.5),
        ("1234", 1234.0),
        (" 1e3 \n", 1000.0),
        ('"1234"', 1234.0),  # a JSON string holding the number
        (b"1234", 1234.0),
        ("b'1234'", 1234.0),  # bytes as an old Airflow stringifies a raw XCom
        (-3, -3.0),
        (True, None),
        (None, None),
        ("", None),
        ("loaded 1234 rows", None),
        ('{"rows": 1234}', None),
        ({"rows": 1234}, None),
        ([1234], None),
        ("NaN", None),
        (float("inf"), None),
        ('"\\"1234\\""', None),  # strings nested deeper than one level are not unwrapped
        ("9" * 100, None),
        (b"\xff", None),
    ],
)
def test_parse_volume(raw: Any, expected: float | None) -> None:
    assert parse_volume(raw) == expected


def test_volume_needs_the_right_fields_per_kind() -> None:
    spec = SourceSpec(name="a", kind="airflow", url="http://x", volume={"key": "rows", "task_id": "publish"})
    assert spec.volume is not None and spec.volume.pipelines == ["*"]
    with pytest.raises(ValidationError, match="needs 'task_id'"):
        SourceSpec(name="a", kind="airflow", url="http://x", volume={"key": "rows"})
    with pytest.raises(ValidationError, match="'task_id' is for airflow"):
        SourceSpec(name="p", kind="prefect", url="http://x", volume={"key": "rows", "task_id": "t"})
    with pytest.raises(ValidationError, match="key"):
        SourceSpec(name="p", kind="prefect", url="http://x", volume={"pipelines": ["x"]})


def test_a_config_error_points_at_the_source(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("groups: []\n")
    p = tmp_path / "sentinel.yaml"
    p.write_text(
        "sources:\n  - name: af\n    kind: airflow\n    url: http://127.0.0.1:8080\n"
        "    volume: {pipelines: [market_*], key: rows}\nrule_files: [r.yaml]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(p, environ={})
    problems = [str(x) for x in info.value.problems]
    assert any(x.startswith(f"{p}:2:") and "needs 'task_id'" in x for x in problems), problems


def test_a_stored_run_keeps_its_volume_and_old_rows_still_load() -> None:
    run = _run("r1", volume=1234.0)
    again = RunUpdate.model_validate(orjson.loads(orjson.dumps(run.model_dump(mode="json"))))
    assert again.volume == 1234.0 and volume_of(again) == 1234.0
    old = run.model_dump(mode="json")
    del old["volume"]  # written before the field existed
    assert RunUpdate.model_validate(old).volume is None


def _run(run_id: str, pipeline: str = "market_data_ingest", state: RunState = RunState.SUCCESS, **kw: Any) -> RunUpdate:
    return RunUpdate(
        source="s", pipeline=pipeline, run_id=run_id, state=state, ended_at=T0 + timedelta(minutes=5), **kw
    )


class Recorder:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        result = self.answer(request)
        if isinstance(result, httpx.Response):
            return result
        if isinstance(result, Exception):
            raise result
        return httpx.Response(200, json=result)


def _airflow(answer: Any) -> tuple[XcomVolumes, Recorder, PoliteClient]:
    spec = SourceSpec(
        name="af", kind="airflow", url="http://af", max_requests_per_second=100, burst=100,
        volume={"pipelines": ["market_*"], "key": "rows", "task_id": "publish"},
    )  # fmt: skip
    rec = Recorder(answer)
    client = PoliteClient(spec, transport=httpx.MockTransport(rec))
    api = AirflowApi(spec, FrozenClock(T0), client)
    api.api = "airflow-v2"
    assert spec.volume is not None
    return XcomVolumes(spec.name, spec.volume, api), rec, client


async def test_airflow_reads_each_successful_configured_run_once() -> None:
    volumes, rec, client = _airflow(lambda r: {"key": "rows", "value": 1234})
    try:
        runs = [
            _run("manual__2026-03-02T06:00:00+00:00"),
            _run("r2", state=RunState.FAILED),
            _run("r3", pipeline="other_dag"),
        ]
        out = await volumes.fill(runs)
        assert [r.volume for r in out] == [1234.0, None, None]
        assert [r.url.raw_path.decode() for r in rec.requests] == [
            "/api/v2/dags/market_data_ingest/dagRuns/manual__2026-03-02T06%3A00%3A00%2B00%3A00"
            "/taskInstances/publish/xcomEntries/rows"
        ]
        # The same run reported again (a re-read inside the overlap) keeps its volume without another request.
        again = await volumes.fill([_run("manual__2026-03-02T06:00:00+00:00")])
        assert again[0].volume == 1234.0 and len(rec.requests) == 1
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "answer",
    [
        lambda r: httpx.Response(404, json={"detail": "XCom entry with key: `rows` not found"}),
        lambda r: httpx.Response(403, json={"detail": "Forbidden"}),
        lambda r: {"key": "rows", "value": "loaded some rows"},
        lambda r: httpx.Response(200, content=b"<html>"),
        lambda r: httpx.ConnectError("refused"),
    ],
)
async def test_airflow_failed_reads_leave_no_volume_and_raise_nothing(answer: Any) -> None:
    volumes, rec, client = _airflow(answer)
    try:
        out = await volumes.fill([_run("r1")])
        assert out[0].volume is None and out[0].state is RunState.SUCCESS
        await volumes.fill([_run("r1")])
        assert len([r for r in rec.requests if r.method == "GET"]) <= 2  # not retried: one (plus auth's retry)
    finally:
        await client.aclose()


async def test_airflow_backlog_is_bounded_per_cycle() -> None:
    volumes, rec, client = _airflow(lambda r: {"value": "7"})
    try:
        out = await volumes.fill([_run(f"r{i}") for i in range(VOLUME_BUDGET + 5)])
        assert len(rec.requests) == VOLUME_BUDGET
        assert sum(r.volume == 7.0 for r in out) == VOLUME_BUDGET
    finally:
        await client.aclose()


def _prefect(answer: Any) -> tuple[ArtifactVolumes, Recorder, PoliteClient]:
    spec = SourceSpec(
        name="pf", kind="prefect", url="http://pf/api", max_requests_per_second=100, burst=100,
        volume={"pipelines": ["market_*"], "key": "rows-loaded"},
    )  # fmt: skip
    rec = Recorder(answer)
    client = PoliteClient(spec, transport=httpx.MockTransport(rec))
    assert spec.volume is not None
    return ArtifactVolumes(spec.name, spec.volume, PrefectApi(spec, client)), rec, client


async def test_prefect_reads_the_newest_artifact_of_each_run_in_one_batch() -> None:
    rows = [
        {"flow_run_id": "a", "key": "rows-loaded", "data": "1234"},  # newest first, as asked
        {"flow_run_id": "a", "key": "rows-loaded", "data": "99"},
        {"flow_run_id": "b", "key": "rows-loaded", "data": 42},
        {"flow_run_id": "c", "key": "rows-loaded", "data": "| table |"},
    ]
    volumes, rec, client = _prefect(lambda r: rows)
    try:
        runs = [_run("a"), _run("b"), _run("c"), _run("d"), _run("e", state=RunState.FAILED), _run("f", "etl")]
        out = await volumes.fill(runs)
        assert [r.volume for r in out] == [1234.0, 42.0, None, None, None, None]
        assert len(rec.requests) == 1
        body = orjson.loads(rec.requests[0].content)
        assert rec.requests[0].url.path == "/api/artifacts/filter"
        assert body["artifacts"] == {"flow_run_id": {"any_": ["a", "b", "c", "d"]}, "key": {"any_": ["rows-loaded"]}}
        assert body["sort"] == "CREATED_DESC"
        await volumes.fill([_run("a"), _run("d")])
        assert len(rec.requests) == 1  # every run is asked about once
    finally:
        await client.aclose()


async def test_prefect_failed_read_leaves_no_volume() -> None:
    volumes, rec, client = _prefect(lambda r: httpx.Response(422, json={"detail": "bad filter"}))
    try:
        out = await volumes.fill([_run("a")])
        assert out[0].volume is None and len(rec.requests) == 1
        assert await volumes.fill([]) == []
        assert len(rec.requests) == 1  # nothing to ask: no request
    finally:
        await client.aclose()


def test_a_rule_test_judges_a_run_by_its_volume(tmp_path: Path) -> None:
    from sentinel.rules.testing import format_report, run_file

    (tmp_path / "rules.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: VolumeLow\n        when: anomaly\n"
        "        features: [volume]\n        direction: fast\n        min_history: 4\n"
        '        annotations: {summary: "{{ pipeline }} {{ description }}"}\n'
    )
    runs = "".join(
        f"          - {{scheduled: {h}h, started: +1m, ended: +5m, volume: {v}}}\n"
        for h, v in enumerate([1000, 1010, 990, 1005, 998, 10])
    )
    test = (
        "rule_files: [rules.yaml]\ntests:\n  - name: t\n    start: 2026-03-02T00:00:00Z\n"
        "    pipelines:\n      - source: af\n        pipeline: market_data_ingest\n        runs:\n"
        + runs
        + "    evaluate:\n"
        "      - {at: 4h10m, alerts: []}\n"
        "      - at: 5h10m\n        alerts:\n"
        "          - labels: {alertname: VolumeLow, severity: warning, source: af, pipeline: market_data_ingest}\n"
        '            annotations: {summary: "market_data_ingest volume 10; usual 993.20–1,008"}\n'
    )
    (tmp_path / "t_test.yaml").write_text(test)
    report = run_file(tmp_path / "t_test.yaml")
    assert report.passed, format_report([report])
