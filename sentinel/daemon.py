"""Wires the data flow: pollers ▶ history ▶ rules ▶ dispatcher ▶ notifications, plus the web server.

The daemon owns no logic of its own beyond the wiring and the two evaluation triggers: a tick every
`evaluation_interval`, and at once when a run finishes (for low latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from loguru import logger

from adapters.http import PoliteClient
from adapters.registry import adapter_for
from sentinel import logs
from sentinel.alerting.ack import AckBook
from sentinel.alerting.alert import Alert
from sentinel.alerting.delivery import correlator_for, delivery_options
from sentinel.alerting.dispatch import Dispatcher
from sentinel.alerting.inhibit import Inhibitor
from sentinel.alerting.intents import IntentLog
from sentinel.alerting.muter import Muting
from sentinel.alerting.nflog import NotificationLog
from sentinel.alerting.pipeline import build_pipelines
from sentinel.alerting.route import Route
from sentinel.alerting.silences import Silences
from sentinel.alerting.time_intervals import TimeIntervals
from sentinel.anomaly.persist import BaselinePersistence
from sentinel.calendars import Calendars
from sentinel.clock import Clock, SystemClock
from sentinel.config import Config, LoadedConfig, load_config
from sentinel.kpi.hooks import Kpis
from sentinel.metrics import Metrics
from sentinel.model import PollResult, RunUpdate, TaskUpdate
from sentinel.notify.base import Integration
from sentinel.notify.http1 import close_pools
from sentinel.observe.history import History, run_order
from sentinel.observe.poller import SourcePoller
from sentinel.rules.engine import RuleEngine
from sentinel.rules.files import LoadedRules, load_rules
from sentinel.store import Store
from sentinel.yamlfile import ConfigError

RULE_STATE = "alerts"
MAX_RUNS_PER_PIPELINE = 100


class Daemon:
    def __init__(
        self,
        loaded: LoadedConfig,
        *,
        clock: Clock | None = None,
        rules: LoadedRules | None = None,
        integrations: Callable[[Config], dict[str, list[Integration]]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        serve_http: bool = True,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.clock: Clock = clock or SystemClock()
        self.metrics = Metrics()
        self._outcome_series: dict[tuple[str, str], tuple[Any, Any]] = {}
        self.history = History(MAX_RUNS_PER_PIPELINE)
        self.store = Store(_store_path(loaded))
        self.nflog = NotificationLog(self.store)
        self.acks = AckBook(self.store)
        self.intents = IntentLog(self.store)
        self.baselines = BaselinePersistence(self.store)
        self.engine = RuleEngine(rules or load_rules(loaded.rule_paths), _source_labels(self.config))
        self.engine.extras["calendars"] = Calendars(self.config.calendars)
        self.kpis = Kpis(self.metrics, self.clock, self.history, self.config.cost)
        self.engine.extras["cost"] = self.kpis.cost
        self._integrations = integrations or self._located_integrations
        self._transport = transport
        self.serve_http = serve_http
        self.dispatcher = Dispatcher(
            Route.build(self.config.route),
            {},
            self.clock,
            nflog=self.nflog,
            acks=self.acks,
            store=self.store,
            correlator=correlator_for(self.config),
            on_incident=self.metrics.incidents.inc,
        )
        self.silences = Silences(self.store)
        self.inhibitor = Inhibitor(self.config.inhibit_rules)
        self.muting = Muting(
            self.silences,
            self.inhibitor,
            TimeIntervals.of(self.config.time_intervals),
            Route.build(self.config.route),
            store=self.store,
            on_suppressed=lambda reason: self.metrics.alerts_suppressed.labels(reason).inc(),
        )
        # Every alert the dispatcher hears of (rules, POST /api/v2/alerts) may be an inhibition source.
        self.dispatcher.put = self._observed(self.dispatcher.put)  # type: ignore[method-assign]
        self.pollers: dict[str, SourcePoller] = {}
        self.clients: list[PoliteClient] = []
        self.attempted: set[str] = set()
        # A source is settled once its history is complete enough to judge: caught up with the first poll's
        # lookback, and polled twice (the first poll's upper bound is the server's clock, to the second, so a
        # run that ended in that last second only shows in the next poll) — or known to be unreachable.
        self.settled: set[str] = set()
        self._good_polls: dict[str, int] = {}
        self.started = asyncio.Event()
        self.web_port: int | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._eval_lock = asyncio.Lock()
        self._web: Any = None
        logs.add_secrets(logs.secrets_of(self.config))

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open()
        await self._restore()
        # Apprise loads ~190 plugins on first use: off the loop.
        receivers = await asyncio.to_thread(self._integrations, self.config)
        self.dispatcher.set_routes(Route.build(self.config.route), self._pipelines(receivers))
        await self._restore_delivery()
        # Restored groups may flush before an evaluation re-offers their alerts: inhibition must see them first.
        restored = [a for g in self.dispatcher.groups.values() for a in g.alerts.values()]
        self.inhibitor.observe(restored, self.clock.now())
        self.metrics.config_last_reload_successful.set(1)
        for spec in self.config.sources:
            self._start_poller(spec)
        if not self.config.sources:
            self.dispatcher.ready.set()
        self._spawn(self.dispatcher.run(), "dispatcher")
        self._spawn(self._tick_loop(), "evaluation")
        if self.serve_http:
            from sentinel.web.server import start_web

            self._web, self.web_port = await start_web(self)
        self.started.set()
        logger.info(
            "sentinel started: {} source(s), {} rule group(s), listening on {}",
            len(self.config.sources),
            len(self.engine.rules.groups()),
            f"{self.config.server.host}:{self.web_port}" if self.serve_http else "-",
        )

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        _, stuck = await asyncio.wait(self._tasks, timeout=10) if self._tasks else (set(), set())
        for t in stuck:  # never hang a shutdown on one task; say which one it was
            logger.error("task {} did not stop within 10 s", t.get_name())
        await self.dispatcher.stop()
        await self.nflog.drain()
        for c in self.clients:
            await c.aclose()
        await close_pools()
        if self._web is not None:
            await self._web.cleanup()
        await self._persist_rule_state()
        await self.baselines.save(self.history, self.clock.now(), force=True)
        await self.store.close()

    async def run_forever(self) -> None:
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' event loop
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await self.start()
        try:
            await stop.wait()  # SIGTERM sets it; Ctrl-C cancels it: either way the state is saved below
        finally:
            logger.info("stopping")
            await self.stop()

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    def _start_poller(self, spec: Any) -> None:
        client = PoliteClient(
            spec,
            transport=self._transport,
            on_request=lambda outcome, _s, name=spec.name: self.metrics.source_requests.labels(name, outcome).inc(),
        )
        self.clients.append(client)
        adapter = adapter_for(spec.kind)(spec, self.clock, client)
        poller = SourcePoller(
            spec,
            adapter,
            self.store,
            self.clock,
            self.handle_result,
            on_duration=lambda s, secs: self.metrics.source_poll_duration.labels(s).observe(secs),
        )
        self.pollers[spec.name] = poller
        self._spawn(poller.run(), f"poll:{spec.name}")

    async def _restore(self) -> None:
        rows = await self.store.load_runs()
        for _source, _pipeline, run, tasks in rows:
            self.history.load_run(RunUpdate.model_validate(run), [TaskUpdate.model_validate(t) for t in tasks or []])
        self.engine.restore(await self.store.all(RULE_STATE))
        await self.baselines.load(self.history)
        await self.kpis.restore(self.store, self.engine)
        await self.nflog.load(self.clock.now())
        await self.muting.load(self.clock.now())
        if rows:
            logger.info("restored {} run(s) and {} alert instance(s)", len(rows), len(self.engine.instance_list()))

    async def _restore_delivery(self) -> None:
        # Order matters: the notification log first, then the intents a crash left (they write to the log),
        # then the groups (their timers assume both).
        await self.acks.load(self.clock.now())
        await self.intents.reconcile(
            self.nflog, lambda receiver, _i: self.metrics.notifications.labels(receiver, "possibly_delivered").inc()
        )
        await self.dispatcher.restore()

    def _pipelines(self, receivers: dict[str, list[Integration]]) -> dict[str, Any]:
        return build_pipelines(
            receivers,
            self.nflog,
            on_outcome=self._on_outcome,
            acks=self.acks,
            intents=self.intents,
            options=delivery_options(self.config),
            muting=self.muting,
        )

    def _observed(self, put: Callable[[list[Alert]], None]) -> Callable[[list[Alert]], None]:
        def put_and_observe(alerts: list[Alert]) -> None:
            self.inhibitor.observe(alerts, self.clock.now())
            put(alerts)

        return put_and_observe

    def _on_outcome(self, receiver: str, outcome: str, seconds: float) -> None:
        # Every send lands here; prometheus_client's labels() lookup (a lock and a tuple each) was a visible
        # share of a busy flush. Bounded: receivers × outcomes, as the metric's own children are.
        series = self._outcome_series.get((receiver, outcome))
        if series is None:
            m = self.metrics
            latency = m.notification_latency.labels(receiver) if outcome == "ok" else None
            series = self._outcome_series[(receiver, outcome)] = (m.notifications.labels(receiver, outcome), latency)
        series[0].inc()
        if series[1] is not None:
            series[1].observe(seconds)

    # -- data flow ---------------------------------------------------------------------------------
    async def handle_result(self, result: PollResult) -> None:
        self.attempted.add(result.source)
        self.metrics.source_up.labels(result.source).set(1 if result.health.reachable else 0)
        changes = self.history.apply(result)
        await self._persist_runs(changes.runs, changes.tasks)
        self.kpis.on_changes(changes)
        if changes.health_changed:
            await self.evaluate()
        elif changes.finished:
            await self.evaluate(only={r.key for r in changes.finished})
        await self.kpis.persist(self.store)  # after evaluating: a scrape must not see a run before its alert
        await self._settle(result)

    async def _settle(self, result: PollResult) -> None:
        if self.dispatcher.ready.is_set():
            return
        if result.health.reachable:
            self._good_polls[result.source] = self._good_polls.get(result.source, 0) + 1
        if not result.health.reachable or (result.caught_up and self._good_polls[result.source] >= 2):
            self.settled.add(result.source)
        if all(s.name in self.settled for s in self.config.sources):
            # First full picture: evaluate everything once before anything may be flushed.
            self.dispatcher.ready.set()
            await self.evaluate()
            logger.info("every source settled; notifications enabled")

    async def evaluate(self, only: set[Any] | None = None) -> None:
        if not self.dispatcher.ready.is_set():
            # Judging a half-read history would open pending (or, with `for: 0`, firing) instances for runs
            # the next poll is about to show; the API would list them and a resolution would follow.
            return
        async with self._eval_lock:
            now = self.clock.now()
            alerts = self.engine.evaluate(self.history, now, only)
            self.dispatcher.put(alerts)
            await self.dispatcher.save()
            self._update_alert_gauge()
            self.kpis.on_evaluate(self.engine, self.dispatcher.route, now, full=only is None)
            await self._persist_rule_state()
            await self.kpis.persist(self.store)
            await self.baselines.save(self.history, now)

    async def _tick_loop(self) -> None:
        interval = self.config.evaluation_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.evaluate()
            except Exception as exc:  # an evaluation bug postpones one tick, never kills the loop
                logger.opt(exception=exc).error("rule evaluation failed")

    def _update_alert_gauge(self) -> None:
        counts: dict[tuple[str, str, str], int] = {}
        for inst in self.engine.instance_list():
            if inst.state in ("pending", "firing"):
                labels = dict(inst.labels)
                k = (labels.get("alertname", ""), labels.get("severity", ""), inst.state)
                counts[k] = counts.get(k, 0) + 1
        self.metrics.alerts.clear()
        for (name, sev, state), n in counts.items():
            self.metrics.alerts.labels(name, sev, state).set(n)

    async def _persist_runs(self, runs: Sequence[RunUpdate], tasks: Sequence[TaskUpdate]) -> None:
        touched = {(r.source, r.pipeline, r.run_id) for r in runs} | {(t.source, t.pipeline, t.run_id) for t in tasks}
        rows = []
        for source, pipeline, run_id in touched:
            ph = self.history.pipelines.get((source, pipeline))  # type: ignore[call-overload]
            if ph is None or run_id not in ph.runs:
                continue
            run = ph.runs[run_id]
            rows.append(
                (
                    source,
                    pipeline,
                    run_id,
                    run_order(run).timestamp(),
                    run.model_dump(mode="json"),
                    [t.model_dump(mode="json") for t in ph.tasks_of(run_id)],
                )
            )
        await self.store.save_runs(rows, MAX_RUNS_PER_PIPELINE)

    async def _persist_rule_state(self) -> None:
        changed, gone = self.engine.take_changes()
        await self.store.put_many(RULE_STATE, changed, delete=gone)

    # -- reload ------------------------------------------------------------------------------------
    def _located_integrations(self, config: Config) -> dict[str, list[Integration]]:
        from sentinel.notify.located import all_integrations

        return all_integrations(self.loaded.path, config)  # a reload re-reads the same file

    async def reload(self) -> tuple[bool, str]:
        """Re-read config and rules; keep everything as it was if either is invalid."""
        try:
            loaded = await asyncio.to_thread(load_config, self.loaded.path)
            rules = await asyncio.to_thread(load_rules, loaded.rule_paths)
            receivers = await asyncio.to_thread(self._integrations, loaded.config)
        except ConfigError as exc:
            self.metrics.config_last_reload_successful.set(0)
            logger.error("reload failed; keeping the running configuration:\n{}", exc)
            return False, str(exc)
        except Exception as exc:
            self.metrics.config_last_reload_successful.set(0)
            logger.error("reload failed; keeping the running configuration: {}", exc)
            return False, str(exc)
        old_sources = {s.name: s for s in self.config.sources}
        self.loaded, self.config = loaded, loaded.config
        logs.add_secrets(logs.secrets_of(self.config))
        self.engine.source_labels = _source_labels(self.config)
        self.engine.extras["calendars"] = Calendars(self.config.calendars)
        self.kpis.reload(self.config.cost)
        self.engine.replace_rules(rules, self.clock.now())
        self.dispatcher.correlator = correlator_for(self.config, self.dispatcher.correlator)
        self.inhibitor.set_rules(self.config.inhibit_rules)
        self.muting.configure(Route.build(self.config.route), TimeIntervals.of(self.config.time_intervals))
        self.dispatcher.set_routes(Route.build(self.config.route), self._pipelines(receivers))
        for spec in self.config.sources:
            if spec.name not in old_sources:
                self._start_poller(spec)
            elif old_sources[spec.name] != spec:
                logger.warning("source {} changed; restart sentinel to apply source changes", spec.name)
        self.metrics.config_last_reload_successful.set(1)
        logger.info("configuration reloaded")
        await self.evaluate()
        return True, "ok"

    @property
    def ready(self) -> bool:
        return self.started.is_set() and all(s.name in self.attempted for s in self.config.sources)


def _store_path(loaded: LoadedConfig) -> str:
    p = Path(loaded.config.store.path)
    return str(p if p.is_absolute() or str(p) == ":memory:" else loaded.base_dir / p)


def _source_labels(config: Config) -> dict[str, dict[str, str]]:
    return {s.name: dict(s.labels) for s in config.sources}


async def run(path: str | Path) -> None:
    loaded = load_config(path)
    daemon = Daemon(loaded)
    with contextlib.suppress(asyncio.CancelledError):
        await daemon.run_forever()
