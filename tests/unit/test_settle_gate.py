"""Rules judge nothing until every source has been read completely: a half-read history must not open
instances (which the API would list, and a resolution would follow) for runs the next poll is about to show."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sentinel.clock import FrozenClock
from sentinel.config import load_config
from sentinel.daemon import Daemon
from sentinel.model import PollResult, RunState, RunUpdate, SourceHealth

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


def daemon(tmp: Path) -> Daemon:
    (tmp / "rules.yaml").write_text(
        "groups:\n  - name: g\n    rules:\n      - alert: Failed\n        when: failed\n        severity: page\n"
    )
    (tmp / "sentinel.yaml").write_text(
        "sources:\n  - {name: s, kind: airflow, url: 'http://127.0.0.1:9', username: u, password: p}\n"
        "rule_files: [rules.yaml]\nreceivers: [{name: r, console: true}]\nroute: {receiver: r}\n"
        "store: {path: state.db}\n"
    )
    return Daemon(load_config(tmp / "sentinel.yaml"), clock=FrozenClock(NOW), serve_http=False)


def poll(caught_up: bool, *runs: RunUpdate) -> PollResult:
    return PollResult(
        source="s", health=SourceHealth(source="s", reachable=True, observed_at=NOW), runs=runs, caught_up=caught_up
    )


async def test_no_instances_before_every_source_settles(tmp_path: Path) -> None:
    d = daemon(tmp_path)
    await d.store.open()
    try:
        failed = RunUpdate(
            source="s", pipeline="p", run_id="r1", state=RunState.FAILED, started_at=NOW, ended_at=NOW, updated_at=NOW
        )
        await d.handle_result(poll(False, failed))  # backlog still being read
        await d.evaluate()  # a tick in the meantime
        assert not d.engine.instance_list()
        await d.handle_result(poll(False))
        assert not d.engine.instance_list() and not d.dispatcher.ready.is_set()
        await d.handle_result(poll(True))
        assert d.dispatcher.ready.is_set()
        assert [i.state for i in d.engine.instance_list()] == ["firing"]
    finally:
        await d.store.close()
