"""What a backtest found, per rule, receiver, day and week; as text for people and JSON for machines.

A *page* is a notification with at least one firing alert. A page is on a non-trading day when its date,
on the calendar of the rule group of its first firing alert (XNYS when the group names none), is not a
session. An *incident* is one receiver's group from its first firing notification until the group drains
(every alert resolved and the resolution flushed, whether or not the receiver is told of resolutions).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sentinel.alerting.alert import LabelSet
from sentinel.backtest.replay import Outcome
from sentinel.calendars import Calendars
from sentinel.replay.record import Notification, label_text
from sentinel.rules.files import LoadedRules

DEFAULT_CALENDAR = "XNYS"
MAX_LISTED = 20  # rows of a list printed as text; JSON has them all


def rule_calendars(rules: LoadedRules) -> dict[str, str]:
    out: dict[str, str] = {}
    for _, group in rules.groups():
        for rule in group.rules:
            if group.calendar and rule.alert not in out:
                out[rule.alert] = group.calendar
    return out


def _day(at: datetime, tz: ZoneInfo) -> str:
    return at.astimezone(tz).date().isoformat()


def _week(at: datetime, tz: ZoneInfo) -> str:
    year, week, _ = at.astimezone(tz).date().isocalendar()
    return f"{year}-W{week:02d}"


def _alertnames(n: Notification) -> list[str]:
    return n.alertnames()


def summarize(out: Outcome, rules: LoadedRules, calendars: Calendars, tz: ZoneInfo) -> dict[str, Any]:
    cal_of = rule_calendars(rules)
    per_rule: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    per_receiver: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for f in out.fired:
        for key in (_day(f.at, tz), _week(f.at, tz), "total"):
            per_rule[f.alertname]["alerts"][key] += 1
    off_days: list[dict[str, Any]] = []
    for n in out.notifications:
        keys = (_day(n.at, tz), _week(n.at, tz), "total")
        for name in _alertnames(n):
            for key in keys:
                per_rule[name]["notifications"][key] += 1
        for key in keys:
            per_receiver[n.receiver]["notifications"][key] += 1
            if n.firing:
                per_receiver[n.receiver]["pages"][key] += 1
        if n.firing:
            cal_name = next((cal_of[a] for a in _firing_names(n) if a in cal_of), DEFAULT_CALENDAR)
            cal = calendars.get(cal_name)
            local_day = cal.date_of(n.at)
            if not cal.is_session(local_day):
                off_days.append(
                    {
                        "at": n.at.isoformat(),
                        "day": local_day.isoformat(),
                        "weekday": local_day.strftime("%a"),
                        "calendar": cal_name,
                        "receiver": n.receiver,
                        "group": n.group_map,
                        "alertnames": _firing_names(n),
                    }
                )
    return {
        "period": {"start": out.start.isoformat(), "end": out.end.isoformat(), "timezone": str(tz)},
        "runs": out.runs,
        "evaluations": out.evaluations,
        "rules": {name: _table(c, ("alerts", "notifications")) for name, c in sorted(per_rule.items())},
        "receivers": {name: _table(c, ("notifications", "pages")) for name, c in sorted(per_receiver.items())},
        "non_trading_day_pages": off_days,
        "incidents": incidents(out.notifications, out.closed),
        "alerts": [{"at": f.at.isoformat(), "alertname": f.alertname, "labels": dict(f.labels)} for f in out.fired],
        "notifications": [n.dump() for n in out.notifications],
    }


def _firing_names(n: Notification) -> list[str]:
    return sorted({dict(a).get("alertname", "") for a in n.firing})


def _table(counters: Mapping[str, Counter[str]], kinds: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {k: counters[k]["total"] for k in kinds}
    days = sorted({d for k in kinds for d in counters[k] if d != "total" and "W" not in d})
    weeks = sorted({d for k in kinds for d in counters[k] if "W" in d})
    out["per_day"] = {d: {k: counters[k][d] for k in kinds} for d in days}
    out["per_week"] = {w: {k: counters[k][w] for k in kinds} for w in weeks}
    return out


def incidents(sent: Iterable[Notification], closed: Iterable[tuple[datetime, str, LabelSet]]) -> list[dict[str, Any]]:
    events: list[tuple[datetime, int, Any]] = [(n.at, 0, n) for n in sent]
    events += [(at, 1, (receiver, group)) for at, receiver, group in closed]
    events.sort(key=lambda e: (e[0], e[1]))
    open_: dict[tuple[str, LabelSet], dict[str, Any]] = {}
    done: list[dict[str, Any]] = []
    for at, kind, item in events:
        if kind == 0:
            n: Notification = item
            key = (n.receiver, n.group)
            inc = open_.get(key)
            if inc is None and n.firing:
                inc = open_[key] = {
                    "opened": at.isoformat(),
                    "closed": None,
                    "receiver": n.receiver,
                    "group": n.group_map,
                    "alertnames": [],
                    "notifications": 0,
                }
            if inc is not None:
                inc["notifications"] += 1
                inc["alertnames"] = sorted(set(inc["alertnames"]) | set(n.alertnames()))
        else:
            inc = open_.pop(item, None)
            if inc is not None:
                inc["closed"] = at.isoformat()
                done.append(inc)
    done += open_.values()
    return sorted(done, key=lambda i: (i["opened"], i["receiver"]))


# -- comparing two rule sets -----------------------------------------------------------------------
def compare(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    def counts(s: dict[str, Any]) -> Counter[str]:
        return Counter(label_text(a["labels"]) for a in s["alerts"])

    b, n = counts(base), counts(new)
    weeks = sorted({w for s in (base, new) for r in s["receivers"].values() for w in r["per_week"]})
    receivers = sorted(set(base["receivers"]) | set(new["receivers"]))

    def per_week(s: dict[str, Any], receiver: str) -> dict[str, int]:
        r = s["receivers"].get(receiver, {"per_week": {}, "notifications": 0})
        row = {w: r["per_week"].get(w, {}).get("notifications", 0) for w in weeks}
        row["total"] = r["notifications"]
        return row

    return {
        "appear": [{"alert": k, "times": n[k]} for k in sorted(n) if k not in b],
        "disappear": [{"alert": k, "times": b[k]} for k in sorted(b) if k not in n],
        "changed": [{"alert": k, "before": b[k], "after": n[k]} for k in sorted(b) if k in n and b[k] != n[k]],
        "notifications_per_receiver_per_week": {
            r: {"before": per_week(base, r), "after": per_week(new, r)} for r in receivers
        },
    }


# -- text ------------------------------------------------------------------------------------------
def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]


def _weekly(title: str, table: Mapping[str, Any], kinds: tuple[str, str]) -> list[str]:
    weeks = sorted({w for t in table.values() for w in t["per_week"]})
    lines = [f"{title} (per week: {kinds[0]}/{kinds[1]})"]
    if not table:
        return [*lines, "  none"]
    rows = [["", "total", *weeks]]
    for name, t in table.items():
        cells = [
            f"{t['per_week'].get(w, {}).get(kinds[0], 0)}/{t['per_week'].get(w, {}).get(kinds[1], 0)}" for w in weeks
        ]
        rows.append([name, f"{t[kinds[0]]}/{t[kinds[1]]}", *cells])
    return lines + _grid(rows)


def render(s: dict[str, Any]) -> str:
    p = s["period"]
    lines = [
        f"backtest {p['start']} → {p['end']} (days in {p['timezone']}): {s['runs']} runs replayed, "
        f"{s['evaluations']} evaluations, {len(s['alerts'])} alerts fired, {len(s['notifications'])} notifications",
        "",
        *_weekly("alerts fired and notifications, per rule", s["rules"], ("alerts", "notifications")),
        "",
        *_weekly("notifications and pages, per receiver", s["receivers"], ("notifications", "pages")),
        "",
        "per day: alerts fired / notifications (by rule), pages (by receiver)",
    ]
    days = sorted({d for t in (*s["rules"].values(), *s["receivers"].values()) for d in t["per_day"]})
    for d in days:
        by_rule = ", ".join(
            f"{name} {t['per_day'][d]['alerts']}/{t['per_day'][d]['notifications']}"
            for name, t in s["rules"].items()
            if d in t["per_day"]
        )
        pages = ", ".join(
            f"{name} {t['per_day'][d]['pages']}"
            for name, t in s["receivers"].items()
            if d in t["per_day"] and t["per_day"][d]["pages"]
        )
        weekday = datetime.fromisoformat(d).strftime("%a")
        lines.append(f"  {d} {weekday}  {by_rule or '-'}" + (f"  | pages: {pages}" if pages else ""))
    if not days:
        lines.append("  nothing fired")
    off = s["non_trading_day_pages"]
    lines += ["", f"pages on non-trading days: {len(off)}"]
    for o in off[:MAX_LISTED]:
        group = ", ".join(f'{k}="{v}"' for k, v in sorted(o["group"].items()))
        lines.append(f"  {o['day']} {o['weekday']} ({o['calendar']}) {o['at']} {o['receiver']} {{{group}}}")
    incs = s["incidents"]
    lines += ["", f"incidents opened: {len(incs)}"]
    for i in incs[:MAX_LISTED]:
        group = ", ".join(f'{k}="{v}"' for k, v in sorted(i["group"].items()))
        closed = i["closed"] or "still open"
        lines.append(f"  {i['opened']} → {closed}  {i['receiver']} {{{group}}}  {i['notifications']} notification(s)")
    if len(incs) > MAX_LISTED:
        lines.append(f"  … {len(incs) - MAX_LISTED} more (--json lists them all)")
    return "\n".join(lines)


def render_compare(c: dict[str, Any], base_name: str, new_name: str) -> str:
    lines = [f"compare: {base_name} (before) → {new_name} (after)"]
    for key, title in (("appear", "alerts that appear"), ("disappear", "alerts that disappear")):
        lines.append(f"{title}: {len(c[key])}")
        lines += [f"  {x['alert']} ×{x['times']}" for x in c[key][:MAX_LISTED]]
    if c["changed"]:
        lines.append(f"alerts that fire a different number of times: {len(c['changed'])}")
        lines += [f"  {x['alert']} ×{x['before']} → ×{x['after']}" for x in c["changed"][:MAX_LISTED]]
    per = c["notifications_per_receiver_per_week"]
    lines.append("notifications per receiver per week (before → after)")
    if per:
        weeks = [w for w in next(iter(per.values()))["before"] if w != "total"]
        rows = [["", *weeks, "total"]]
        for r, ba in per.items():
            rows.append([r, *(f"{ba['before'][w]} → {ba['after'][w]}" for w in [*weeks, "total"])])
        lines += _grid(rows)
    else:
        lines.append("  none")
    return "\n".join(lines)
