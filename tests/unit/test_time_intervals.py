"""Time intervals: Alertmanager's syntax and meaning, daylight saving in New York, config errors with
file:line:col, and a route's mute_/active_time_intervals keeping its notifications quiet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sentinel.alerting.alert import Alert
from sentinel.alerting.inhibit import Inhibitor
from sentinel.alerting.muter import Muting
from sentinel.alerting.nflog import NotificationLog
from sentinel.alerting.pipeline import build_pipelines
from sentinel.alerting.route import Route
from sentinel.alerting.silences import Silences
from sentinel.alerting.stage import FlushContext
from sentinel.alerting.time_intervals import TimeIntervals
from sentinel.config import TimeIntervalConfig, load_config
from sentinel.yamlfile import ConfigError
from tests.unit.test_alerting import Recorder

NY = "America/New_York"


def interval(**spec: object) -> TimeIntervalConfig:
    return TimeIntervalConfig.model_validate(spec)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def minutes_matching(ti: TimeIntervalConfig, day: datetime) -> int:
    compiled = ti.compile()
    return sum(compiled.contains(day + timedelta(minutes=m)) for m in range(24 * 60))


def test_business_hours_follow_new_york_daylight_saving_in_march() -> None:
    hours = interval(times=[{"start_time": "09:00", "end_time": "17:00"}], weekdays=["monday:friday"], location=NY)
    c = hours.compile()
    # Friday 6 March 2026, EST (UTC-5): 09:00 local is 14:00 UTC.
    assert not c.contains(utc(2026, 3, 6, 13, 59))
    assert c.contains(utc(2026, 3, 6, 14, 0))
    assert c.contains(utc(2026, 3, 6, 21, 59)) and not c.contains(utc(2026, 3, 6, 22, 0))
    # Monday 9 March 2026, after the switch on Sunday the 8th, EDT (UTC-4): 09:00 local is 13:00 UTC.
    assert c.contains(utc(2026, 3, 9, 13, 0))
    assert c.contains(utc(2026, 3, 9, 20, 59)) and not c.contains(utc(2026, 3, 9, 21, 0))
    # The weekend in between, whatever the hour.
    assert not c.contains(utc(2026, 3, 7, 15, 0)) and not c.contains(utc(2026, 3, 8, 15, 0))


def test_the_skipped_and_the_repeated_hour() -> None:
    two_am = interval(times=[{"start_time": "02:00", "end_time": "03:00"}], location=NY)
    one_am = interval(times=[{"start_time": "01:00", "end_time": "02:00"}], location=NY)
    # 8 March 2026: clocks jump from 02:00 to 03:00, so 02:xx never happens that day (UTC day 05:00 -> 04:59 next).
    assert minutes_matching(two_am, utc(2026, 3, 8, 5, 0)) == 0
    assert minutes_matching(two_am, utc(2026, 3, 7, 5, 0)) == 60
    # 1 November 2026: clocks fall back from 02:00 EDT to 01:00 EST, so 01:xx happens twice.
    assert minutes_matching(one_am, utc(2026, 11, 1, 4, 0)) == 120
    c = one_am.compile()
    assert c.contains(utc(2026, 11, 1, 5, 30)) and c.contains(utc(2026, 11, 1, 6, 30))  # 01:30 EDT and 01:30 EST
    assert not c.contains(utc(2026, 11, 1, 7, 0))  # 02:00 EST


def test_days_of_month_count_back_from_the_end_and_clamp() -> None:
    last = interval(days_of_month=["-1"]).compile()
    assert last.contains(utc(2028, 2, 29, 12)) and not last.contains(utc(2028, 2, 28, 12))  # leap year
    assert last.contains(utc(2027, 2, 28, 12))
    assert last.contains(utc(2026, 4, 30, 0)) and not last.contains(utc(2026, 5, 30, 0))
    last_three = interval(days_of_month=["-3:-1"]).compile()
    assert [d for d in range(1, 32) if last_three.contains(utc(2026, 1, d))] == [29, 30, 31]
    late = interval(days_of_month=["30:31"]).compile()
    assert not any(late.contains(utc(2027, 2, d)) for d in range(1, 29))  # no 30th in February
    assert late.contains(utc(2027, 4, 30))
    first_week = interval(days_of_month=["1:7"], months=["january", "march:may"], years=["2026:2027"]).compile()
    assert first_week.contains(utc(2026, 4, 3)) and not first_week.contains(utc(2026, 2, 3))
    assert not first_week.contains(utc(2028, 1, 3)) and not first_week.contains(utc(2026, 4, 8))


def test_syntax_as_alertmanager_writes_it() -> None:
    c = interval(
        times=[{"start_time": "00:00", "end_time": "06:00"}, {"start_time": "22:00", "end_time": "24:00"}],
        weekdays=["Saturday", "sunday"],
        months=[12, "1:2"],
    ).compile()
    assert c.contains(utc(2026, 12, 5, 23, 59))  # Saturday 23:59 in December
    assert c.contains(utc(2026, 1, 4, 3, 0)) and not c.contains(utc(2026, 1, 4, 7, 0))
    assert not c.contains(utc(2026, 3, 7, 3, 0))  # March is not listed
    assert interval().compile().contains(utc(2026, 6, 1))  # nothing given: always


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"weekdays": ["friday:monday"]}, "the week starts on sunday"),
        ({"weekdays": ["funday"]}, "'funday' is not a weekday"),
        ({"days_of_month": [0]}, "0 is not a day of the month"),
        ({"days_of_month": ["-1:5"]}, "the end day must be negative"),
        ({"days_of_month": ["10:5"]}, "always before the start day"),
        ({"months": ["smarch"]}, "'smarch' is not a valid month"),
        ({"months": ["may:march"]}, "end month is before the start month"),
        ({"years": ["2027:2026"]}, "end year is before the start year"),
        ({"times": [{"start_time": "17:00", "end_time": "09:00"}]}, "start_time must be before end_time"),
        ({"times": [{"start_time": "9am", "end_time": "10:00"}]}, "invalid time '9am'"),
        ({"times": [{"start_time": "09:00", "end_time": "24:01"}]}, "invalid time"),
        ({"location": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_values_are_refused(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        interval(**spec)


CONFIG = """\
receivers:
  - name: ops
route:
  receiver: ops
  routes:
    - matchers: ['severity="warning"']
      mute_time_intervals: [{mute}]
time_intervals:
  - name: nights
    time_intervals:
      - times:
          - start_time: 18:30
            end_time: 24:00
        weekdays: ['monday:friday']
        days_of_month: [1:5]
        location: {location}
"""


def test_config_reads_unquoted_yaml_times_and_reports_file_line_col(tmp_path: Path) -> None:
    path = tmp_path / "sentinel.yaml"
    path.write_text(CONFIG.format(mute="nights", location=NY))
    cfg = load_config(path).config
    # YAML 1.1 reads 18:30 and 1:5 as base-60 numbers; we get back what the user wrote.
    compiled = cfg.time_intervals[0].time_intervals[0].compile()
    assert compiled.times[0].begin == 18 * 60 + 30 and compiled.times[0].end == 24 * 60
    assert (compiled.days_of_month[0].begin, compiled.days_of_month[0].end) == (1, 5)

    path.write_text(CONFIG.format(mute="weekends", location=NY))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}:7:29: mute_time_intervals: 'weekends' is not defined under time_intervals"

    path.write_text(CONFIG.format(mute="nights", location="Europe/Atlantis"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(
        f"{path}:16:19: time_intervals[0].time_intervals[0].location: unknown time zone 'Europe/Atlantis'"
    )

    path.write_text(CONFIG.format(mute="nights", location=NY).replace("monday:friday", "monday:fri"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:14:20: time_intervals[0].time_intervals[0].weekdays[0]: 'fri'")


def route_muting(tmp_path: Path, route_yaml: str) -> tuple[Muting, Route]:
    path = tmp_path / "sentinel.yaml"
    path.write_text(
        "receivers: [{name: ops}]\n"
        f"route:\n{route_yaml}"
        "time_intervals:\n"
        "  - name: business-hours\n"
        "    time_intervals: [{times: [{start_time: '09:00', end_time: '17:00'}], weekdays: ['monday:friday'],"
        f" location: {NY}}}]\n"
    )
    cfg = load_config(path).config
    route = Route.build(cfg.route)
    muting = Muting(Silences(), Inhibitor(), TimeIntervals.of(cfg.time_intervals), route)
    return muting, route


def ctx_for(route: Route, now: datetime) -> FlushContext:
    return FlushContext(
        now=now, group_key=f"{route.key}:g", group_labels={}, receiver="ops", repeat_interval=timedelta(hours=4)
    )


ALERT = Alert.of({"alertname": "PipelineFailed", "severity": "warning", "pipeline": "eod_reporting"})
MONDAY_NOON_NY = utc(2026, 11, 30, 17, 0)
MONDAY_NIGHT_NY = utc(2026, 12, 1, 3, 0)


async def test_a_route_muted_in_business_hours_notifies_nothing_then(tmp_path: Path) -> None:
    muting, root = route_muting(
        tmp_path,
        "  receiver: ops\n  routes:\n    - matchers: ['severity=\"warning\"']\n"
        "      mute_time_intervals: [business-hours]\n",
    )
    child = root.routes[0]
    rec = Recorder("ops")
    pipeline = build_pipelines({"ops": [rec]}, NotificationLog(), muting=muting)["ops"]
    await pipeline(ctx_for(child, MONDAY_NOON_NY), [ALERT])
    assert rec.sent == []
    status = muting.status(ALERT.label_map, MONDAY_NOON_NY)
    assert status.state == "suppressed" and status.muted_by == ("business-hours",)
    await pipeline(ctx_for(child, MONDAY_NIGHT_NY), [ALERT])
    assert rec.sent == [[("eod_reporting", "firing")]]
    assert muting.status(ALERT.label_map, MONDAY_NIGHT_NY).state == "active"


async def test_a_route_active_only_in_business_hours_is_quiet_at_night(tmp_path: Path) -> None:
    muting, root = route_muting(tmp_path, "  receiver: ops\n  active_time_intervals: [business-hours]\n")
    rec = Recorder("ops")
    pipeline = build_pipelines({"ops": [rec]}, NotificationLog(), muting=muting)["ops"]
    await pipeline(ctx_for(root, MONDAY_NIGHT_NY), [ALERT])
    assert rec.sent == []
    assert muting.status(ALERT.label_map, MONDAY_NIGHT_NY).muted_by == ("business-hours",)
    await pipeline(ctx_for(root, MONDAY_NOON_NY), [ALERT])
    assert rec.sent == [[("eod_reporting", "firing")]]
