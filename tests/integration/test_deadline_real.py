"""A `when: deadline` rule, end to end, against real Airflow 3 and Prefect 3 servers.

The rule's deadline is the next whole minute at least ~50 s ahead, in a whole-hour UTC offset chosen so
that it is around noon there (`Etc/GMT±N`, no calendar): the test runs the same at any hour, never near the
rule's midnight, where "yesterday" and "today" would be other days than it means. Before it nothing
fires; once it passes with no successful run *for* today, exactly one DeadlineMissed page reaches a real
local webhook sink; the next successful run resolves it.

Before today's deadline the rule judges yesterday's period, so the pipeline gets a successful catch-up run
*for* yesterday first (Airflow: a run with yesterday's logical date; Prefect: a run scheduled for
yesterday), executed today. That keeps "before the deadline" quiet for the right reason and shows that a run
for another period, although it ran today, does not meet today's deadline.

The pipeline, `deadline_pipeline`, is used by no other test: the session's servers are shared, and any
earlier success for today would meet the deadline at once.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.model import RunState
from tests.servers import procs
from tests.servers.airflow import DAGS_DIR
from tests.sink import Delivery, WebhookSink
from tests.waiting import until

pytestmark = pytest.mark.integration

POLL = 2.0
PIPELINE = "deadline_pipeline"
ALERT = "DeadlineMissed"
RULE_ID = f"deadlines/{ALERT}"
RUNBOOK = "https://runbooks.example/DeadlineMissed.md"
LEAD = timedelta(seconds=50)  # the deadline is at least this far ahead when the rule file is written


@dataclass
class Stack:
    source_yaml: str
    runs_on_server: Callable[[], int]  # how many runs of PIPELINE the server already has
    # A successful run of PIPELINE, executed now; *for* `period_of` if given (a catch-up run), else a normal
    # manual run. Returns its run id and when it ended.
    succeed: Callable[[datetime | None], tuple[str, datetime]]
    # Whether a change-feed read bounded by the last whole second (what the adapters send: the server's Date
    # header) already returns the run as finished.
    settled: Callable[[str], bool]


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _check(response: Any) -> Any:
    if response.is_error:
        raise AssertionError(
            f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text}"
        )
    return response.json()


def _airflow(server: Any) -> Stack:
    # The harness copies tests/servers/dags when the server starts; a server started from a checkout
    # without this DAG still gets it here (the dag-processor lists new files every few seconds).
    dag_file = server.dags_folder / f"{PIPELINE}.py"
    if not dag_file.exists():
        tmp = dag_file.with_suffix(".tmp")
        shutil.copyfile(DAGS_DIR / f"{PIPELINE}.py", tmp)
        tmp.replace(dag_file)
    server.wait_dag_loaded(PIPELINE, timeout=120)
    server.unpause(PIPELINE)

    def runs_on_server() -> int:
        return int(_check(server.request("GET", f"/dags/{PIPELINE}/dagRuns", params={"limit": 1}))["total_entries"])

    def succeed(period_of: datetime | None) -> tuple[str, datetime]:
        if period_of is None:
            run_id = server.trigger(PIPELINE)  # Airflow 3: no logical date, run_after = now
        else:
            body = {"conf": {}, "logical_date": period_of.isoformat()}
            run_id = str(_check(server.request("POST", f"/dags/{PIPELINE}/dagRuns", json=body))["dag_run_id"])
        final = server.wait_run(PIPELINE, run_id, timeout=180)
        assert final["state"] == "success", final
        return run_id, _ts(final["end_date"])

    def settled(run_id: str) -> bool:
        # Airflow touches a run's updated_at (not in the API's JSON) a moment after it ends; ask the way the
        # adapter's feed does, up to the server's own clock (its Date header can trail ours by a second or two).
        upper = server.server_now()
        params = {"updated_at_gte": (upper - timedelta(minutes=10)).isoformat(), "updated_at_lte": upper.isoformat()}
        runs = _check(server.request("GET", f"/dags/{PIPELINE}/dagRuns", params=params))["dag_runs"]
        return any(r["dag_run_id"] == run_id and r["state"] == "success" for r in runs)

    source = f"kind: airflow\n    url: {server.url}\n    username: {server.username}\n    password: {server.password}"
    return Stack(source, runs_on_server, succeed, settled)


def _prefect(server: Any) -> Stack:
    def runs_on_server() -> int:
        body = {"flows": {"name": {"any_": [PIPELINE]}}, "limit": 1}
        return len(_check(server.request("POST", "/flow_runs/filter", json=body)))

    def catch_up(period_of: datetime) -> str:
        # What a deployment's missed slot looks like once a worker gets to it: scheduled for `period_of`
        # (its expected_start_time), running and completing now.
        flow = _check(server.request("POST", "/flows/", json={"name": PIPELINE}))
        scheduled = {
            "type": "SCHEDULED",
            "name": "Scheduled",
            "state_details": {"scheduled_time": period_of.isoformat()},
        }
        run = _check(server.request("POST", "/flow_runs/", json={"flow_id": flow["id"], "state": scheduled}))
        for state_type in ("PENDING", "RUNNING", "COMPLETED"):
            state = {"type": state_type, "name": state_type.capitalize()}
            result = _check(
                server.request("POST", f"/flow_runs/{run['id']}/set_state", json={"state": state, "force": True})
            )
            assert result["status"] == "ACCEPT", result
        return str(run["id"])

    def succeed(period_of: datetime | None) -> tuple[str, datetime]:
        run_id = server.run_flow(PIPELINE, fail=False) if period_of is None else catch_up(period_of)
        final = server.wait_flow_run(run_id, timeout=120)
        assert final["state_type"] == "COMPLETED", final
        if period_of is not None:
            assert _ts(final["expected_start_time"]) == period_of, final
        return run_id, _ts(final["end_time"])

    return Stack(f"kind: prefect\n    url: {server.api_url}", runs_on_server, succeed, server.settled)


def next_deadline(now: datetime) -> datetime:
    """The next whole minute at least LEAD after `now`."""
    t = now + LEAD
    whole = t.replace(second=0, microsecond=0)
    return whole if whole == t else whole + timedelta(minutes=1)


def noon_zone(now: datetime) -> ZoneInfo:
    """A fixed-offset zone where `now` is between 11:00 and 13:00 (Etc/GMT-k is UTC+k)."""
    offset = 12 - now.hour if now.hour <= 12 else -(now.hour - 12)  # UTC+12 .. UTC-11: all Etc zones exist
    return ZoneInfo("Etc/UTC" if offset == 0 else f"Etc/GMT{-offset:+d}")


def write_config(tmp: Path, source_yaml: str, sink: WebhookSink, deadline: datetime, tz: ZoneInfo) -> Path:
    (tmp / "rules.yaml").write_text(
        f"""\
groups:
  - name: deadlines
    rules:
      - alert: {ALERT}
        when: deadline
        deadline: "{deadline.astimezone(tz):%H:%M}"
        timezone: {tz.key}
        pipelines: {{pipeline: {PIPELINE}}}
        severity: critical
        annotations:
          summary: "{{{{ pipeline }}}}: no successful run for {{{{ period }}}} by {{{{ deadline }}}}"
          runbook_url: {RUNBOOK}
"""
    )
    cfg = tmp / "sentinel.yaml"
    cfg.write_text(
        f"""\
sources:
  - name: sched
    {source_yaml}
    poll_interval: {POLL}s
    timeout: 10s
    overlap: 5m
    max_requests_per_second: 5
    burst: 10
rule_files: [rules.yaml]
evaluation_interval: 1s
receivers:
  - name: sink
    webhook: {{url: "{sink.url}/am"}}
route:
  receiver: sink
  group_by: [alertname, source, pipeline]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 4h
store: {{path: state.db}}
server: {{listen: "127.0.0.1:0"}}
"""
    )
    return cfg


def alerts(deliveries: list[Delivery], status: str) -> list[tuple[Delivery, dict[str, Any]]]:
    """(delivery, alert) for every DeadlineMissed alert with `status` in the Alertmanager webhooks."""
    return [
        (d, a)
        for d in deliveries
        if d.path == "/am"
        for a in d.body["alerts"]
        if a["status"] == status and a["labels"]["alertname"] == ALERT
    ]


def firing_deliveries(deliveries: list[Delivery]) -> list[Delivery]:
    return list({id(d): d for d, _ in alerts(deliveries, "firing")}.values())


@pytest.mark.parametrize("stack", ["airflow3", "prefect3"])
async def test_deadline_fires_when_missed_and_resolves_on_success(
    stack: str, request: pytest.FixtureRequest, sink: WebhookSink, tmp_path: Path
) -> None:
    server = await asyncio.to_thread(request.getfixturevalue, stack)
    sched = await asyncio.to_thread(_prefect if stack == "prefect3" else _airflow, server)
    existing = await asyncio.to_thread(sched.runs_on_server)
    assert existing == 0, f"{PIPELINE} already has {existing} run(s) on this shared server; it must be ours alone"

    # Yesterday's period, met by a catch-up run executed now.
    tz = noon_zone(datetime.now(UTC))
    yesterday = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    catch_up_id, catch_up_end = await asyncio.to_thread(sched.succeed, yesterday)
    # Sentinel's first poll must already see the run. A daemon started within the second in which the run
    # last changed would see the DAG but not yet its run, and the rule, judging yesterday for now, would
    # page for one poll (a start-up race of Sentinel's, not what this test is about).
    await asyncio.to_thread(
        procs.wait_until, lambda: sched.settled(catch_up_id), 30, "the catch-up run to settle", interval=0.2
    )
    deadline = next_deadline(datetime.now(UTC))
    today = deadline.astimezone(tz).date()
    assert yesterday.astimezone(tz).date() == today - timedelta(days=1), (yesterday, deadline, tz)  # noon there

    daemon = Daemon(load_config(write_config(tmp_path, sched.source_yaml, sink, deadline, tz)))
    await daemon.start()
    try:
        await until(lambda: daemon.ready and daemon.dispatcher.ready.is_set(), 60, "sentinel ready")

        def pipeline_runs() -> list[Any]:
            return [
                r for key, ph in daemon.history.pipelines.items() if key.pipeline == PIPELINE for r in ph.runs.values()
            ]

        await until(
            lambda: any(r.state is RunState.SUCCESS for r in pipeline_runs()), 30, f"the catch-up run of {PIPELINE}"
        )
        (catch_up,) = pipeline_runs()
        assert catch_up.scheduled_for is not None and catch_up.scheduled_for.date() == yesterday.date()
        assert catch_up.ended_at is not None and catch_up.ended_at.date() == catch_up_end.date()
        left = deadline.timestamp() - time.time()
        assert left > 5, f"setup took too long: only {left:.1f}s left before the {deadline:%H:%M} deadline"

        # Before the deadline: yesterday's period is judged, and met; nothing pending, firing or sent.
        poller = daemon.pollers["sched"]
        cycles = poller.cycles
        while time.time() < deadline.timestamp() - 0.5:
            assert not daemon.engine.instances.get(RULE_ID), daemon.engine.instances.get(RULE_ID)
            assert not alerts(sink.deliveries, "firing"), sink.deliveries
            await asyncio.sleep(0.2)
        assert poller.cycles >= cycles + 3, "too few polls before the deadline to mean anything"
        assert not sink.deliveries

        # The deadline passes with no successful run *for* today (the catch-up run ran today, for yesterday).
        await sink.wait_for(lambda ds: bool(alerts(ds, "firing")), deadline.timestamp() - time.time() + 15)
        (page,) = firing_deliveries(sink.deliveries)
        latency = page.received - deadline.timestamp()
        print(f"\n{stack}: deadline {deadline:%H:%M:%S} → page {latency:+.2f}s")
        assert latency >= 0, "paged before the deadline"
        assert latency <= 10, f"page arrived {latency:.1f}s after the deadline"
        (alert,) = page.body["alerts"]
        # the selector picks only PIPELINE: the other DAGs on the server (no runs at all) would be late too
        assert {a["labels"]["pipeline"] for _, a in alerts(sink.deliveries, "firing")} == {PIPELINE}
        assert alert["labels"] == {
            "alertname": ALERT,
            "severity": "critical",
            "source": "sched",
            "pipeline": PIPELINE,
        }
        assert alert["annotations"]["runbook_url"] == RUNBOOK
        assert alert["annotations"]["summary"] == (
            f"{PIPELINE}: no successful run for {today.isoformat()} by {deadline.astimezone(tz):%H:%M %Z}"
        )
        assert _ts(alert["startsAt"]) >= deadline
        (inst,) = daemon.engine.instances[RULE_ID].values()
        assert inst.state == "firing" and dict(inst.labels)["pipeline"] == PIPELINE

        # A successful run for today resolves it.
        _, run_end = await asyncio.to_thread(sched.succeed, None)
        await sink.wait_for(lambda ds: bool(alerts(ds, "resolved")), POLL + 15)
        ((resolved_delivery, resolved),) = alerts(sink.deliveries, "resolved")
        latency = resolved_delivery.received - run_end.timestamp()
        print(f"{stack}: successful run → resolved {latency:.2f}s after its end")
        assert resolved_delivery.body["status"] == "resolved"
        assert resolved["labels"] == alert["labels"]
        assert [i.state for i in daemon.engine.instances[RULE_ID].values()] == ["resolved"]

        # and it stays resolved: a few more polls and evaluations send nothing new
        sent = len(sink.deliveries)
        cycles = poller.cycles
        await until(lambda: poller.cycles >= cycles + 2, 30, "two more polls")
        await asyncio.sleep(1.5)  # let a group_interval pass; the assertion is on absence
        assert len(sink.deliveries) == sent
        assert len(firing_deliveries(sink.deliveries)) == 1
    finally:
        await daemon.stop()
