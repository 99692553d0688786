"""`sentinel backtest` reproduces what the live daemon sent, against a real Prefect 3 server.

The live Daemon watches while the history is made (failures and recoveries of three ad-hoc flows, each
waited for at the webhook sink), then the backtest reads the same stretch of history back through the
Prefect adapter and replays it on a simulated clock. The notifications must be the same ones — receiver,
group labels, firing and resolved alerts, in the same order per group — only their timing differs (the
live daemon adds poll latency; the replay's flushes land on exact group_wait/group_interval instants).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from sentinel.cli_backtest import backtest
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.model import RunState
from sentinel.rules.files import load_rules
from tests.sink import Delivery, WebhookSink
from tests.waiting import until

pytestmark = pytest.mark.integration

POLL = 1.0
PREFIX = f"bt{uuid.uuid4().hex[:6]}"
ALPHA, BETA, GAMMA = f"{PREFIX}_alpha", f"{PREFIX}_beta", f"{PREFIX}_gamma"

RULES = f"""\
groups:
  - name: backtest
    pipelines: {{pipeline: "{PREFIX}_*"}}   # the server is shared with other tests: only this test's flows
    rules:
      - alert: PipelineFailed
        when: failed
        severity: critical
        annotations:
          summary: "{{{{ pipeline }}}} run {{{{ run_id }}}} {{{{ state }}}}"
"""


def write_config(tmp: Path, api_url: str, sink: WebhookSink) -> Path:
    (tmp / "rules.yaml").write_text(RULES)
    cfg = tmp / "sentinel.yaml"
    cfg.write_text(
        f"""\
sources:
  - name: prefect
    kind: prefect
    url: {api_url}
    poll_interval: {POLL}s
    max_requests_per_second: 10
    burst: 10
rule_files: [rules.yaml]
evaluation_interval: 1s
receivers:
  - name: sink
    webhook: {{url: "{sink.url}/am"}}
route:
  receiver: sink
  group_by: [alertname, pipeline]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 4h
store: {{path: state.db}}
server: {{listen: "127.0.0.1:0"}}
"""
    )
    return cfg


Signature = tuple[str, tuple[tuple[str, str], ...], tuple[str, ...], tuple[str, ...]]


def live(d: Delivery) -> Signature:
    """What a webhook delivery says, without when."""
    b = d.body

    def names(status: str) -> tuple[str, ...]:
        return tuple(
            sorted(
                f"{a['labels']['alertname']}:{a['labels']['pipeline']}" for a in b["alerts"] if a["status"] == status
            )
        )

    return (b["receiver"], tuple(sorted(b["groupLabels"].items())), names("firing"), names("resolved"))


def replayed(n: dict[str, Any]) -> Signature:
    def names(alerts: list[dict[str, str]]) -> tuple[str, ...]:
        return tuple(sorted(f"{a['alertname']}:{a['pipeline']}" for a in alerts))

    return (n["receiver"], tuple(sorted(n["group"].items())), names(n["firing"]), names(n["resolved"]))


async def test_backtest_reproduces_the_live_daemons_notifications(
    request: pytest.FixtureRequest, sink: WebhookSink, tmp_path: Path
) -> None:
    server = await asyncio.to_thread(request.getfixturevalue, "prefect3")
    cfg = write_config(tmp_path, server.api_url, sink)
    began = time.time()
    daemon = Daemon(load_config(cfg))
    await daemon.start()
    try:
        await until(lambda: daemon.ready and daemon.dispatcher.ready.is_set(), 60, "sentinel ready")

        async def run(flow: str, fail: bool, wait_for: int) -> None:
            await asyncio.to_thread(server.run_flow, flow, fail)
            await sink.wait_for(lambda ds: len(ds) >= wait_for, POLL + 20)

        await run(ALPHA, True, 1)  # alpha fails: a page
        await run(BETA, True, 2)  # beta fails: a page of its own group

        async def judged(flow: str, state: RunState, count: int = 1) -> None:
            # An absence is asserted only after the daemon has seen the run and polled (and judged) twice more.
            def seen() -> bool:
                return count <= sum(
                    r.state is state
                    for key, ph in daemon.history.pipelines.items()
                    if key.pipeline == flow
                    for r in ph.runs.values()
                )

            await until(seen, POLL + 20, f"{flow} {state.value} seen by the daemon")
            poller = daemon.pollers["prefect"]
            cycles = poller.cycles
            await until(lambda: poller.cycles >= cycles + 2, 20, "two more polls")

        await run(GAMMA, False, 2)
        await judged(GAMMA, RunState.SUCCESS)  # gamma's success must not notify
        assert len(sink.deliveries) == 2
        await run(BETA, False, 3)  # beta recovers: resolved
        await run(ALPHA, True, 3)  # alpha fails again: still the same firing alert, no new message
        await judged(ALPHA, RunState.FAILED, 2)  # the second failure judged: no new message
        assert len(sink.deliveries) == 3
        await run(ALPHA, False, 4)  # alpha recovers
    finally:
        await daemon.stop()
    sent = [live(d) for d in sink.deliveries if d.path == "/am"]

    loaded = load_config(cfg)
    since = timedelta(seconds=time.time() - began + 60)
    result = await backtest(loaded, load_rules(loaded.rule_paths), since, ZoneInfo("UTC"))
    again = [replayed(n) for n in result["notifications"]]

    def per_group(sigs: list[Signature]) -> dict[Any, list[Signature]]:
        out: dict[Any, list[Signature]] = {}
        for s in sigs:
            out.setdefault((s[0], s[1]), []).append(s)
        return out

    assert per_group(again) == per_group(sent), f"live: {sent}\nbacktest: {again}"
    assert len(sent) == 4
    assert result["rules"]["PipelineFailed"]["alerts"] == 2  # alpha (failing twice in a row is one alert), beta
    assert [i["group"]["pipeline"] for i in result["incidents"]] == [ALPHA, BETA]
