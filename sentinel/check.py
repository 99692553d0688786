"""`sentinel check`: validate sentinel.yaml and its rule files, reporting every problem as file:line:col.

Schema problems come from the pydantic models (config, rule files, condition kinds); this module adds
what a schema cannot know: calendar names defined elsewhere, time zones, runbook links on disk, names
that must be unique across files, and the warnings `--strict` turns into errors.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import jinja2.sandbox

from sentinel.anomaly.detectors import check_message
from sentinel.calendars import known_calendars
from sentinel.config import LoadedConfig, load_config
from sentinel.rules.files import load_rule_file
from sentinel.yamlfile import ConfigError, Document, Problem, load

_JINJA = jinja2.sandbox.ImmutableSandboxedEnvironment()
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http(s)://, mailto:, ...: links we never fetch


def problems(config_path: Path) -> list[Problem]:
    """Every problem in the config and the rule files it names, warnings included, in file order."""
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        return exc.problems
    found = _guarded(config_path, lambda: _config_problems(loaded))
    found += rule_problems(
        loaded.rule_paths,
        known_calendars(loaded.config.calendars),
        runbook_dirs=[loaded.base_dir],
        reads_volume=any(s.volume is not None for s in loaded.config.sources),
    )
    found += _guarded(config_path, lambda: _receiver_problems(loaded))
    return _unique(found)


def rule_problems(
    paths: Sequence[Path],
    calendars: Iterable[str],
    runbook_dirs: Sequence[Path] = (),
    reads_volume: bool | None = None,
) -> list[Problem]:
    """Problems of rule files on their own (schema, templates) and together (group names).

    `reads_volume`: whether any source in sentinel.yaml has `volume:` (None: rule files checked without one)."""
    known = set(calendars)
    found: list[Problem] = []
    groups: dict[str, Problem] = {}  # group name -> where it was first defined
    for path in paths:
        found += _guarded(path, lambda p=path: _rule_file_problems(p, known, runbook_dirs, groups, reads_volume))
    return found


def _rule_file_problems(
    path: Path,
    calendars: set[str],
    runbook_dirs: Sequence[Path],
    groups: dict[str, Problem],
    reads_volume: bool | None = None,
) -> list[Problem]:
    try:
        doc = load(path)
    except ConfigError as exc:
        return exc.problems  # unreadable or not YAML: nothing more to say about it
    found: list[Problem] = []
    try:
        load_rule_file(path)
    except ConfigError as exc:
        found += exc.problems
    # The checks below read the raw document so a schema error elsewhere does not hide them.
    found += _semantic(doc, path, calendars, [*runbook_dirs, *path.resolve().parents], groups, reads_volume)
    return found


def _semantic(
    doc: Document,
    path: Path,
    calendars: set[str],
    runbook_dirs: list[Path],
    groups: dict[str, Problem],
    reads_volume: bool | None = None,
) -> list[Problem]:
    out: list[Problem] = []
    data = doc.data
    groups_data = data.get("groups") if isinstance(data, dict) else None
    for gi, g in enumerate(groups_data if isinstance(groups_data, list) else []):
        if not isinstance(g, dict):
            continue
        gp: tuple[str | int, ...] = ("groups", gi)
        name = g.get("name")
        if isinstance(name, str):
            here = doc.problem((*gp, "name"), "")
            first = groups.setdefault(name, here)
            if first is not here:
                out.append(
                    doc.problem(
                        (*gp, "name"),
                        f"groups[{gi}].name: group {name!r} is already defined at {first.file}:{first.line}; "
                        "group names must be unique across rule files",
                    )
                )
        out += _calendar_and_timezone(doc, g, gp, calendars)
        rules = g.get("rules")
        if not rules:
            out.append(doc.problem(gp, f"group {name!r} has no rules", severity="warning"))
            continue
        for ri, r in enumerate(rules if isinstance(rules, list) else []):
            if isinstance(r, dict):
                rp = (*gp, "rules", ri)
                out += _calendar_and_timezone(doc, r, rp, calendars)
                out += _runbook(doc, r, rp, runbook_dirs)
                out += _templates(doc, r, rp)
                out += _anomaly_detector(doc, r, rp)
                out += _volume_read(doc, r, rp, reads_volume)
    return out


def _volume_read(
    doc: Document, rule: dict[Any, Any], path: tuple[str | int, ...], reads_volume: bool | None
) -> list[Problem]:
    """An anomaly rule judging `volume` when no source reads one: it would never judge it, silently."""
    features = rule.get("features")
    if reads_volume is not False or rule.get("when") != "anomaly":
        return []
    if not isinstance(features, list) or "volume" not in features:
        return []
    return [
        doc.problem(
            (*path, "features"),
            "features: 'volume' is read only from sources with a `volume:` block in sentinel.yaml, and none has "
            "one: no run will carry a volume, so this rule never judges it",
            severity="warning",
        )
    ]


def _templates(doc: Document, rule: dict[Any, Any], path: tuple[str | int, ...]) -> list[Problem]:
    """Templates that parse but cannot compile (an unknown filter or test): the schema pass stops at
    the first of these, so they are found here, one per annotation."""
    annotations = rule.get("annotations")
    out: list[Problem] = []
    for key, source in annotations.items() if isinstance(annotations, dict) else ():
        if not isinstance(source, str):
            continue
        try:
            _JINJA.compile(source)
        except jinja2.TemplateError as exc:
            msg = getattr(exc, "message", None) or str(exc)
            out.append(doc.problem((*path, "annotations", key), f"annotations.{key}: template does not compile: {msg}"))
    return out


def _anomaly_detector(doc: Document, rule: dict[Any, Any], path: tuple[str | int, ...]) -> list[Problem]:
    """A PyOD detector needs the optional `anomaly` extra (and must be a model PyOD has)."""
    detector = rule.get("detector")
    if rule.get("when") != "anomaly" or not isinstance(detector, str):
        return []
    msg = check_message(rule.get("alert"), detector)
    return [] if msg is None else [doc.problem((*path, "detector"), msg)]


def _calendar_and_timezone(
    doc: Document, node: dict[Any, Any], path: tuple[str | int, ...], calendars: set[str]
) -> list[Problem]:
    out: list[Problem] = []
    cal = node.get("calendar")
    if isinstance(cal, str) and cal not in calendars:
        out.append(
            doc.problem(
                (*path, "calendar"),
                f"calendar: unknown calendar {cal!r}; built in or defined under calendars: in sentinel.yaml: "
                f"{', '.join(sorted(calendars))}",
            )
        )
    tz = node.get("timezone")
    if isinstance(tz, str):
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            out.append(
                doc.problem(
                    (*path, "timezone"), f"timezone: unknown time zone {tz!r}; use an IANA name like America/New_York"
                )
            )
    return out


def _runbook(doc: Document, rule: dict[Any, Any], path: tuple[str | int, ...], dirs: list[Path]) -> list[Problem]:
    annotations = rule.get("annotations")
    url = annotations.get("runbook_url") if isinstance(annotations, dict) else None
    alert = rule.get("alert")
    if url is None:
        return [doc.problem(path, f"rule {alert!r} has no annotations.runbook_url", severity="warning")]
    if not isinstance(url, str) or "{" in url or _URL.match(url):
        return []  # templated links and URLs are not ours to resolve (we never fetch)
    target = url.split("#", 1)[0].split("?", 1)[0].strip()
    if not target:
        return [doc.problem((*path, "annotations", "runbook_url"), "annotations.runbook_url: empty link")]
    candidates = [Path(target)] if Path(target).is_absolute() else [d / target for d in dirs]
    if any(c.is_file() for c in candidates):
        return []
    looked = "" if Path(target).is_absolute() else f" (looked in {dirs[0]} and the rule file's directories)"
    return [doc.problem((*path, "annotations", "runbook_url"), f"annotations.runbook_url: {target} not found{looked}")]


def _config_problems(loaded: LoadedConfig) -> list[Problem]:
    """Route names of time intervals must be defined under time_intervals (Alertmanager refuses them too)."""
    cfg = loaded.config
    defined = {t.name for t in cfg.time_intervals}
    undefined: list[tuple[tuple[str | int, ...], str]] = []

    def walk(route: Any, path: tuple[str | int, ...]) -> None:
        for key in ("mute_time_intervals", "active_time_intervals"):
            for i, name in enumerate(getattr(route, key)):
                if name not in defined:
                    undefined.append(((*path, key, i), f"{key}: {name!r} is not defined under time_intervals"))
        for i, child in enumerate(route.routes):
            walk(child, (*path, "routes", i))

    walk(cfg.route, ("route",))
    if not undefined:
        return []
    doc = load(loaded.path)  # parsed again only for positions: rare, and YAML parsing is the slow part
    return [doc.problem(path, msg) for path, msg in undefined]


def _receiver_problems(loaded: LoadedConfig) -> list[Problem]:
    from sentinel.notify.located import all_integrations

    try:
        all_integrations(loaded.path, loaded.config)
    except ConfigError as exc:
        return exc.problems
    return []


def _guarded(path: Path, fn: Callable[[], list[Problem]]) -> list[Problem]:
    """Run one check; a bug in a checker must still end as a file:line:col line, not a traceback."""
    try:
        result: list[Problem] = fn()
    except Exception as exc:
        return [
            Problem(
                str(path),
                1,
                1,
                f"internal error while checking this file ({type(exc).__name__}: {exc}); please report it",
            )
        ]
    return result


def _unique(found: list[Problem]) -> list[Problem]:
    # A schema error and a semantic check can find the same value; one line per place is enough.
    seen: set[tuple[str, int, int, str]] = set()
    out: list[Problem] = []
    for p in found:
        key = (p.file, p.line, p.col, p.severity)
        if key not in seen:
            seen.add(key)
            out.append(p)
    order = {f: i for i, f in reversed(list(enumerate(p.file for p in out)))}
    return sorted(out, key=lambda p: (order[p.file], p.line, p.col))


def check(config_path: Path, strict: bool = False) -> int:
    """The `sentinel check` command: problems to stderr, warnings to stdout; exit 1 on any error
    (and, with `strict`, on any warning)."""
    found = problems(config_path)
    errors = [p for p in found if p.severity == "error" or strict]
    warnings = [p for p in found if p.severity != "error"]
    for p in found:
        print(p, file=sys.stderr if p in errors else sys.stdout, flush=True)
    if errors:
        tail = f", {len(warnings)} of them warning(s) (--strict)" if strict and warnings else ""
        print(f"{len(errors)} error(s){tail}", file=sys.stderr)
        return 1
    note = f" ({len(warnings)} warning(s))" if warnings else ""
    print(f"{config_path}: ok{note}")
    return 0
