"""Inhibition as Alertmanager does it: equal labels, resolved sources, the two-sided guard; indexed by the
equal-label values; and through the notification pipeline, with the reason shown and counted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sentinel.alerting.alert import Alert
from sentinel.alerting.inhibit import Inhibitor
from sentinel.alerting.muter import Muting
from sentinel.alerting.nflog import NotificationLog
from sentinel.alerting.pipeline import build_pipelines
from sentinel.alerting.route import Route
from sentinel.alerting.silences import Silences
from sentinel.alerting.stage import FlushContext
from sentinel.alerting.time_intervals import TimeIntervals
from sentinel.config import Config, InhibitRuleConfig, RouteConfig, load_config
from sentinel.metrics import Metrics
from tests.unit.test_alerting import Recorder

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
SOURCE_DOWN = InhibitRuleConfig.model_validate(
    {"source_matchers": ['alertname="SourceDown"'], "target_matchers": ['alertname!="SourceDown"'], "equal": ["source"]}
)


def a(name: str, ends_at: datetime | None = None, **labels: str) -> Alert:
    return Alert.of({"alertname": name, **labels}, starts_at=NOW - timedelta(minutes=5), ends_at=ends_at)


def test_source_down_inhibits_only_alerts_of_that_source() -> None:
    inh = Inhibitor([SOURCE_DOWN])
    down = a("SourceDown", source="airflow-prod")
    inh.observe([down, a("PipelineFailed", source="airflow-prod", pipeline="p")], NOW)
    assert inh.inhibited_by({"alertname": "PipelineFailed", "source": "airflow-prod"}, NOW) == (down.fingerprint,)
    assert inh.mutes({"alertname": "PipelineFailed", "source": "prefect-prod"}, NOW) is None
    reason = inh.mutes({"alertname": "RunStuck", "source": "airflow-prod"}, NOW)
    assert reason is not None and reason.kind == "inhibited" and reason.by == (down.fingerprint,)
    # The source alert itself is not a target of this rule.
    assert inh.mutes(down.label_map, NOW) is None


def test_resolved_sources_inhibit_nothing() -> None:
    inh = Inhibitor([SOURCE_DOWN])
    down = a("SourceDown", source="af")
    inh.observe([down], NOW)
    target = {"alertname": "PipelineFailed", "source": "af"}
    assert inh.mutes(target, NOW)
    inh.observe([down.resolve(NOW)], NOW)
    assert inh.mutes(target, NOW) is None and not inh.rules[0].index
    # An alert posted with an endsAt stops inhibiting when that time passes, without being offered again.
    posted = a("SourceDown", ends_at=NOW + timedelta(minutes=5), source="af")
    inh.observe([posted], NOW)
    assert inh.mutes(target, NOW + timedelta(minutes=4))
    assert inh.mutes(target, NOW + timedelta(minutes=5)) is None


def test_missing_equal_labels_are_equal_as_empty_strings() -> None:
    inh = Inhibitor([SOURCE_DOWN])
    inh.observe([a("SourceDown")], NOW)  # no source label at all
    assert inh.mutes({"alertname": "PipelineFailed"}, NOW)
    assert inh.mutes({"alertname": "PipelineFailed", "source": "af"}, NOW) is None


def test_an_alert_matching_both_sides_is_only_inhibited_by_sources_that_are_not_targets() -> None:
    rule = InhibitRuleConfig.model_validate(
        {
            "source_matchers": ['severity=~"critical|page"'],
            "target_matchers": ['severity=~"warning|critical"'],
            "equal": ["pipeline"],
        }
    )
    inh = Inhibitor([rule])
    crit = a("Late", severity="critical", pipeline="p")
    warn = a("Slow", severity="warning", pipeline="p")
    inh.observe([crit, warn], NOW)
    # The critical alert matches both sides: it mutes the warning but neither itself nor its peers.
    assert inh.inhibited_by(warn.label_map, NOW) == (crit.fingerprint,)
    assert inh.inhibited_by(crit.label_map, NOW) == ()
    crit2 = a("Failed", severity="critical", pipeline="p")
    inh.observe([crit2], NOW)
    assert inh.inhibited_by(crit.label_map, NOW) == () and inh.inhibited_by(crit2.label_map, NOW) == ()
    # A source that is not also a target does inhibit the two-sided ones.
    page = a("Down", severity="page", pipeline="p")
    inh.observe([page], NOW)
    assert inh.inhibited_by(crit.label_map, NOW) == (page.fingerprint,)
    assert set(inh.inhibited_by(warn.label_map, NOW)) == {crit.fingerprint, crit2.fingerprint, page.fingerprint}


def test_sources_are_indexed_by_their_equal_label_values() -> None:
    inh = Inhibitor([SOURCE_DOWN])
    downs = [a("SourceDown", source=f"s{i}") for i in range(1000)]
    inh.observe(downs, NOW)
    index = inh.rules[0].index
    assert len(index) == 1000 and all(len(bucket) == 1 for bucket in index.values())
    assert index[("s7",)].keys() == {downs[7].fingerprint}
    assert inh.inhibited_by({"alertname": "X", "source": "s999"}, NOW) == (downs[999].fingerprint,)


def test_new_rules_on_reload_see_the_alerts_already_firing() -> None:
    inh = Inhibitor([])
    down = a("SourceDown", source="af")
    inh.observe([down, a("PipelineFailed", source="af")], NOW)
    assert inh.mutes({"alertname": "PipelineFailed", "source": "af"}, NOW) is None
    inh.set_rules([SOURCE_DOWN])
    assert inh.inhibited_by({"alertname": "PipelineFailed", "source": "af"}, NOW) == (down.fingerprint,)


async def test_the_pipeline_drops_inhibited_alerts_and_says_why() -> None:
    metrics = Metrics()
    inh = Inhibitor([SOURCE_DOWN])
    route = Route.build(RouteConfig(receiver="ops"))
    muting = Muting(
        Silences(),
        inh,
        TimeIntervals(),
        route,
        on_suppressed=lambda reason: metrics.alerts_suppressed.labels(reason).inc(),
    )
    rec = Recorder("ops")
    pipeline = build_pipelines({"ops": [rec]}, NotificationLog(), muting=muting)["ops"]
    down = a("SourceDown", source="af", pipeline="")
    failed = a("PipelineFailed", source="af", pipeline="market_data_ingest")
    inh.observe([down, failed], NOW)
    ctx = FlushContext(
        now=NOW, group_key="0:g", group_labels={"source": "af"}, receiver="ops", repeat_interval=timedelta(hours=4)
    )
    await pipeline(ctx, [down, failed])
    assert rec.sent == [[("", "firing")]]  # only the root cause pages
    status = muting.status(failed.label_map, NOW)
    assert status.state == "suppressed" and status.inhibited_by == (down.fingerprint,)
    assert muting.marker[("0:g", failed.fingerprint)].inhibited_by == (down.fingerprint,)
    # Counted once per episode, not once per flush.
    later = FlushContext(
        now=NOW + timedelta(minutes=5),
        group_key="0:g",
        group_labels={"source": "af"},
        receiver="ops",
        repeat_interval=timedelta(hours=4),
    )
    await pipeline(later, [down, failed])
    assert metrics.registry.get_sample_value("sentinel_alerts_suppressed_total", {"reason": "inhibited"}) == 1


def test_the_shipped_default_rule_loads(tmp_path: Path) -> None:
    from sentinel.demo import CONFIG

    text = CONFIG.split("rule_files:")[0].split("sources:")[0] + CONFIG[CONFIG.index("receivers:") :]
    path = tmp_path / "sentinel.yaml"
    path.write_text(text.replace("{{", "{").replace("}}", "}").replace("{port}", "0"))
    rules = load_config(path).config.inhibit_rules
    assert [(str(r.source_matchers[0]), str(r.target_matchers[0]), r.equal) for r in rules] == [
        ('alertname="SourceDown"', 'alertname!="SourceDown"', ["source"])
    ]


def test_posted_sources_leave_the_index_when_their_end_passes_unless_reposted_later() -> None:
    inh = Inhibitor([SOURCE_DOWN])
    inh.observe([a("SourceDown", ends_at=NOW + timedelta(minutes=5), source="af")], NOW)
    inh.observe([a("SourceDown", ends_at=NOW + timedelta(minutes=5), source="pf")], NOW)
    # Prometheus re-posts "af" with a later end; "pf" stops being posted.
    inh.observe([a("SourceDown", ends_at=NOW + timedelta(minutes=10), source="af")], NOW + timedelta(minutes=1))
    inh.observe([], NOW + timedelta(minutes=6))  # no alert offered: the clock alone ends "pf"
    assert sorted(k for k in inh.rules[0].index) == [("af",)] and inh.any_source()
    inh.observe([], NOW + timedelta(minutes=10))
    assert not inh.rules[0].index and not inh.any_source() and not inh.alerts


async def test_muting_is_idle_only_when_nothing_can_mute_and_nothing_is_held_or_owed() -> None:
    from sentinel.alerting.matchers import parse_matchers
    from sentinel.alerting.muter import AlertStatus, MuteReason

    cfg = load_config_text(
        "receivers: [{name: ops, console: true}]\n"
        "route: {receiver: ops, routes: [{receiver: ops, matchers: ['team=\"x\"'], mute_time_intervals: [night]}]}\n"
        "time_intervals: [{name: night, time_intervals: [{times: [{start_time: '00:00', end_time: '06:00'}]}]}]\n"
    )
    route = Route.build(cfg.route)
    inh, silences = Inhibitor([SOURCE_DOWN]), Silences()
    muting = Muting(silences, inh, TimeIntervals.of(cfg.time_intervals), route)
    timed = next(r.key for r in route.walk() if r.opts.mute_time_intervals)
    assert muting.idle(route.key, "g", "ops", NOW)
    assert not muting.idle(timed, "g", "ops", NOW)  # a route with a time interval is never skipped
    inh.observe([a("SourceDown", source="af")], NOW)  # a firing source may inhibit
    assert not muting.idle(route.key, "g", "ops", NOW)
    inh.observe([a("SourceDown", source="af").resolve(NOW)], NOW)
    assert muting.idle(route.key, "g", "ops", NOW)
    sid = await silences.set(
        parse_matchers(['alertname="X"']), NOW + timedelta(hours=1), NOW, created_by="me", comment="c"
    )  # fmt: skip
    assert not muting.idle(route.key, "g", "ops", NOW)  # a live silence
    await silences.expire(sid, NOW)
    assert muting.idle(route.key, "g", "ops", NOW + timedelta(seconds=1))
    muting.mark("g", a("X"), AlertStatus.of([MuteReason("silenced", ("s1",))]), NOW)
    assert not muting.idle(route.key, "g", "ops", NOW)  # a marker to clear at the next flush
    muting.marker.clear()
    await muting.owed.update("g", "ops", {"fp"}, set(), NOW)
    assert not muting.idle(route.key, "g", "ops", NOW)  # a resolution owed to the receiver
    assert muting.idle(route.key, "other-group", "ops", NOW)


def load_config_text(text: str) -> Config:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "sentinel.yaml"
        p.write_text(text)
        return load_config(p).config
