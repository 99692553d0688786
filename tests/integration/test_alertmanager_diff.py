"""Differential test: the same alert stream into real Alertmanager and into Sentinel, same routes, inhibition,
silence and webhook receivers, one real sink; the notifications they send must match.

The stream runs in phases — post one phase to both, wait until both are quiet, then the next — so group
timers cannot make the two batch alerts differently across phases:

1. a silence (`alertname="Noisy"`) through each one's API; then 300 alerts over ~40 groups under four
   receivers (a `continue` route, a critical-only pager, a `...`-free multi-label group_by), including a
   `ClusterDown` that inhibits every warning of its cluster;
2. every 7th alert resolved by an `endsAt` in the past, 60 new alerts, and re-posts of unchanged alerts
   (which must not notify);
3. the inhibiting `ClusterDown` resolved (its cluster's warnings now notify), the whole `ErrorRate` family
   resolved, the silenced alerts resolved (never notified, so nothing to say).

What is compared, per phase: for each (receiver, group labels), the last notification of the phase — its
firing and its resolved alerts by label set (the two hash fingerprints differently). That is the state each
receiver is left in. Alertmanager hands a request's alerts to its dispatcher one at a time while group timers
run in their own goroutines, so a group whose tick falls inside that window may get its phase in two
notifications; Sentinel takes a request in one event-loop step. The number of notifications is therefore
printed, not compared.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from sentinel.config import load_config
from sentinel.daemon import Daemon
from tests.servers.alertmanager import Alertmanager
from tests.sink import Delivery, WebhookSink

# No skip when the binary is missing: tests/run.sh installs it, and a skipped comparison proves nothing.
pytestmark = pytest.mark.integration

RECEIVERS = ("default", "db", "pager", "web")
GROUP_WAIT, GROUP_INTERVAL = "1s", "2s"
QUIET_S = 5.0  # > group_interval + delivery: no new notification for this long means a phase is done

ROUTE = f"""\
route:
  receiver: default
  group_by: [alertname]
  group_wait: {GROUP_WAIT}
  group_interval: {GROUP_INTERVAL}
  repeat_interval: 4h
  routes:
    - receiver: db
      matchers: ['team="db"']
      group_by: [alertname, cluster]
      continue: true
    - receiver: pager
      matchers: ['severity="critical"']
      group_by: [cluster]
    - receiver: web
      matchers: ['team=~"web|edge"']
      group_by: [alertname, cluster, service]
inhibit_rules:
  - source_matchers: ['alertname="ClusterDown"']
    target_matchers: ['severity="warning"']
    equal: [cluster]
"""


def am_config(sink: str) -> str:
    receivers = "".join(
        f"  - name: {r}\n    webhook_configs:\n      - url: {sink}/am/{r}\n        send_resolved: true\n"
        for r in RECEIVERS
    )
    return f"global:\n  resolve_timeout: 5m\n{ROUTE}receivers:\n{receivers}"


def sentinel_config(sink: str) -> str:
    receivers = "".join(f'  - name: {r}\n    webhook: {{url: "{sink}/sn/{r}"}}\n' for r in RECEIVERS)
    return (
        f"resolve_timeout: 5m\n{ROUTE}receivers:\n{receivers}"
        'store: {path: "state.db"}\nserver: {listen: "127.0.0.1:0", api_token: diff-token}\n'
    )


NAMES = ("DiskFull", "HighLatency", "ErrorRate", "Noisy")
TEAMS = ("db", "web", "edge", "ops")


def alert(n: int) -> dict[str, Any]:
    return {
        "labels": {
            "alertname": NAMES[n % 4],
            "cluster": f"c{(n // 4) % 4}",
            "team": TEAMS[(n // 16) % 4],
            "service": f"s{n % 3}",
            "severity": "critical" if n % 5 == 0 else "warning",
            "instance": f"i{n:04d}",
        },
        "annotations": {"summary": f"alert {n}"},
        "generatorURL": "http://prometheus.test/graph",
    }


CLUSTER_DOWN = {"labels": {"alertname": "ClusterDown", "cluster": "c1", "severity": "critical", "team": "ops"}}


def resolved(a: dict[str, Any]) -> dict[str, Any]:
    return {**a, "endsAt": (datetime.now(UTC) - timedelta(milliseconds=500)).isoformat()}


Notice = tuple[str, tuple[tuple[str, str], ...], tuple[Any, ...], tuple[Any, ...]]


def notice(d: Delivery) -> Notice:
    body = d.body
    by_status: dict[str, list[tuple[tuple[str, str], ...]]] = {"firing": [], "resolved": []}
    for a in body["alerts"]:
        by_status[a["status"]].append(tuple(sorted(a["labels"].items())))
    return (
        body["receiver"],
        tuple(sorted(body["groupLabels"].items())),
        tuple(sorted(by_status["firing"])),
        tuple(sorted(by_status["resolved"])),
    )


class Side:
    def __init__(self, name: str, prefix: str, alerts_url: str, sink: WebhookSink) -> None:
        self.name, self.prefix, self.alerts_url, self.sink = name, prefix, alerts_url, sink
        self.mark = 0

    def deliveries(self) -> list[Delivery]:
        return [d for d in self.sink.deliveries if d.path.startswith(self.prefix)]

    def phase(self) -> list[Delivery]:
        return self.deliveries()[self.mark :]

    def next_phase(self) -> None:
        self.mark = len(self.deliveries())


async def quiet(sides: list[Side], deadline_s: float = 90.0) -> None:
    """Wait until neither side has sent anything for QUIET_S (a poll with a deadline, not a fixed sleep)."""
    deadline = time.monotonic() + deadline_s
    last = [len(s.deliveries()) for s in sides]
    since = time.monotonic()
    while time.monotonic() - since < QUIET_S:
        assert time.monotonic() < deadline, f"still notifying after {deadline_s}s: {[s.name for s in sides]}"
        await asyncio.sleep(0.2)
        now = [len(s.deliveries()) for s in sides]
        if now != last:
            last, since = now, time.monotonic()


def final_states(deliveries: list[Delivery]) -> set[Notice]:
    last: dict[tuple[str, Any], Notice] = {}
    for d in deliveries:
        n = notice(d)
        last[(n[0], n[1])] = n
    return set(last.values())


@pytest.fixture
async def alertmanager(sink: WebhookSink, tmp_path: Path) -> AsyncIterator[Alertmanager]:
    work = tmp_path / "am"
    work.mkdir()
    am = await asyncio.to_thread(Alertmanager(am_config(sink.url), work).start)
    yield am
    await asyncio.to_thread(am.stop)


@pytest.fixture
async def sentinel(sink: WebhookSink, tmp_path: Path) -> AsyncIterator[Daemon]:
    work = tmp_path / "sn"
    work.mkdir()
    (work / "sentinel.yaml").write_text(sentinel_config(sink.url))
    d = Daemon(load_config(work / "sentinel.yaml"))
    await d.start()
    yield d
    await d.stop()


async def test_same_stream_same_notifications(alertmanager: Alertmanager, sentinel: Daemon, sink: WebhookSink) -> None:
    sn_url = f"http://127.0.0.1:{sentinel.web_port}"
    sides = [
        Side("alertmanager", "/am/", alertmanager.url, sink),
        Side("sentinel", "/sn/", sn_url, sink),
    ]
    async with httpx.AsyncClient(timeout=30) as c:
        silence = {
            "matchers": [{"name": "alertname", "value": "Noisy", "isRegex": False, "isEqual": True}],
            "startsAt": datetime.now(UTC).isoformat(),
            "endsAt": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            "createdBy": "diff-test",
            "comment": "the Noisy family is known",
        }
        r = await c.post(alertmanager.url + "/api/v2/silences", json=silence)
        assert r.status_code == 200, r.text
        r = await c.post(sn_url + "/api/v1/silences", json=silence, headers={"Authorization": "Bearer diff-token"})
        assert r.status_code == 200, r.text

        async def post_both(alerts: list[dict[str, Any]]) -> None:
            for s in sides:
                s.next_phase()
            results = await asyncio.gather(*(c.post(s.alerts_url + "/api/v2/alerts", json=alerts) for s in sides))
            for s, res in zip(sides, results, strict=True):
                assert res.status_code == 200, f"{s.name}: {res.status_code} {res.text}"

        phases: list[tuple[str, list[dict[str, Any]]]] = [
            ("fire", [alert(n) for n in range(300)] + [CLUSTER_DOWN]),
            (
                "resolve some, add some, re-post the rest",
                [resolved(alert(n)) for n in range(0, 300, 7)]
                + [alert(n) for n in range(300, 360)]
                + [alert(n) for n in range(1, 300, 7)],
            ),
            (
                "lift the inhibition, resolve whole groups",
                [resolved(CLUSTER_DOWN)]
                + [resolved(alert(n)) for n in range(360) if NAMES[n % 4] in ("ErrorRate", "Noisy")],
            ),
        ]
        report = []
        sentinel_phases: list[list[Notice]] = []
        for title, stream in phases:
            await post_both(stream)
            await quiet(sides)
            am, sn = (final_states(s.phase()) for s in sides)
            report.append(f"{title}: alertmanager {len(sides[0].phase())}, sentinel {len(sides[1].phase())}")
            only_am, only_sn = sorted(am - sn), sorted(sn - am)
            assert not only_am and not only_sn, (
                f"phase {title!r} differs\nonly Alertmanager: {only_am[:5]}\nonly Sentinel: {only_sn[:5]}"
            )
            assert am, f"phase {title!r}: nothing was notified; the test would prove nothing"
            sentinel_phases.append([notice(d) for d in sides[1].phase()])
        print("notifications per phase:", "; ".join(report))

    # What the phases exercised, so a broken stream cannot pass: the silenced family was never sent, and
    # c1's warnings reached a receiver only in the phase that resolved ClusterDown.
    def c1_warnings(ns: list[Notice]) -> int:
        return sum(1 for n in ns for a in n[2] if ("cluster", "c1") in a and ("severity", "warning") in a)

    every = [n for ns in sentinel_phases for n in ns]
    assert not any(a for n in every for a in n[2] + n[3] if ("alertname", "Noisy") in a)
    assert [c1_warnings(ns) > 0 for ns in sentinel_phases] == [False, False, True]
    assert any(("alertname", "ClusterDown") in a for n in sentinel_phases[0] for a in n[2])
