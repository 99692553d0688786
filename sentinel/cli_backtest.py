"""`sentinel backtest`: what the rules and the notification pipeline would have done over real history."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from sentinel.clock import Clock, SystemClock
from sentinel.config import LoadedConfig, load_config, resolve_rule_files
from sentinel.durations import parse_duration
from sentinel.rules.files import LoadedRules, load_rules
from sentinel.yamlfile import ConfigError, Problem


def add_parser(sub: Any) -> None:
    b = sub.add_parser("backtest", help="replay real scheduler history through the rules and the notification pipeline")
    b.add_argument("-c", "--config", default="sentinel.yaml", help="path to sentinel.yaml (default ./sentinel.yaml)")
    b.add_argument("--since", default="7d", help="how far back to replay, e.g. 30d, 2w, 12h (default 7d)")
    b.add_argument("--rules", nargs="+", metavar="FILE", help="rule files to replay instead of the config's")
    b.add_argument("--compare", nargs="+", metavar="BASE_RULES", help="also replay these rules and show the difference")
    b.add_argument("--timezone", default="UTC", help="timezone of the per-day and per-week buckets (default UTC)")
    b.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    try:
        since = parse_duration(args.since)
        tz = ZoneInfo(args.timezone)
    except (ValueError, ZoneInfoNotFoundError) as exc:
        print(f"sentinel backtest: {exc}", file=sys.stderr)
        return 2
    if since <= timedelta(0):
        print("sentinel backtest: --since must be positive", file=sys.stderr)
        return 2
    if getattr(args, "log_level", "INFO").upper() == "INFO":
        from sentinel import logs

        # The adapters narrate every catch-up cycle at INFO; during a backtest that is what the bar shows.
        logs.setup("WARNING", getattr(args, "log_json", False))
    try:
        loaded = load_config(Path(args.config))
        rules = _rules(args.rules, loaded)
        base = _rules(args.compare, loaded) if args.compare else None
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    from sentinel.gc_tuning import tuned_for_batch

    try:
        with tuned_for_batch():
            result = asyncio.run(backtest(loaded, rules, since, tz, base=base, progress_stream=sys.stderr))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a source that cannot be read: say which, no traceback
        print(f"sentinel backtest: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        from sentinel.backtest.report import render, render_compare

        print(render(result["after"] if base is not None else result))
        if base is not None:
            print()
            print(render_compare(result["compare"], " ".join(args.compare), " ".join(args.rules or ["config rules"])))
    return 0


def _rules(files: list[str] | None, loaded: LoadedConfig) -> LoadedRules:
    if not files:
        return load_rules(loaded.rule_paths)
    paths, missing = resolve_rule_files(files, Path.cwd())
    if missing:
        raise ConfigError([Problem(p, 1, 1, "rule file matches no file") for _, p in missing])
    return load_rules(paths)


async def backtest(
    loaded: LoadedConfig,
    rules: LoadedRules,
    since: timedelta,
    tz: ZoneInfo,
    *,
    base: LoadedRules | None = None,
    clock: Clock | None = None,
    transport: Any = None,
    progress_stream: Any = None,
    end: datetime | None = None,
) -> dict[str, Any]:
    """Fetch, replay (once, or twice with `base`), summarize. The JSON `--json` prints."""
    from sentinel.backtest.fetch import ProgressBar, fetch_all
    from sentinel.backtest.replay import replay
    from sentinel.backtest.report import compare, summarize
    from sentinel.calendars import Calendars

    clock = clock or SystemClock()
    end = end or clock.now()
    start = end - since
    config = loaded.config
    bar = ProgressBar(progress_stream, progress_stream.isatty()) if progress_stream is not None else None
    histories = await fetch_all(config.sources, start, clock, transport=transport, progress=bar)
    calendars = Calendars(config.calendars)
    after = summarize(await replay(config, rules, histories, start, end), rules, calendars, tz)
    if base is None:
        return after
    before = summarize(await replay(config, base, histories, start, end), base, calendars, tz)
    return {"before": before, "after": after, "compare": compare(before, after)}
