"""The `sentinel` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

import sentinel

DEFAULT_CONFIG = "sentinel.yaml"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sentinel",
        description="Alerting, SLA and cost monitoring for Apache Airflow and Prefect pipelines.",
    )
    p.add_argument("--version", action="version", version=f"sentinel {sentinel.__version__}")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    p.add_argument("--log-json", action="store_true", help="log JSON lines instead of text")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run the daemon")
    r.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="path to sentinel.yaml (default ./sentinel.yaml)")

    d = sub.add_parser("demo", help="run against a built-in simulator of three investment pipelines")
    d.add_argument("--speed", type=float, default=120.0, help="simulated seconds per real second (default 120)")
    d.add_argument("--port", type=int, default=0, help="port for Sentinel's own HTTP server (default: any free)")
    d.add_argument("--duration", type=float, default=0, help="stop after this many real seconds (default: Ctrl-C)")

    c = sub.add_parser("check", help="validate sentinel.yaml and every rule file it names")
    c.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="path to sentinel.yaml (default ./sentinel.yaml)")
    c.add_argument("--strict", action="store_true", help="treat warnings as errors (exit 1 on any warning)")

    t = sub.add_parser("test", help="run rule unit tests (default: rules/tests/*.yaml)")
    t.add_argument(
        "files", nargs="*", metavar="FILE", help="test files or directories of them (default rules/tests/*.yaml)"
    )
    t.add_argument("--junit", metavar="FILE", help="also write the results as JUnit XML to FILE")
    t.add_argument("--run", metavar="REGEX", help="run only the tests whose name matches REGEX")
    from sentinel import cli_backtest

    cli_backtest.add_parser(sub)
    from sentinel import cli_ack

    cli_ack.add_parser(sub)
    from sentinel import cli_silence

    cli_silence.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from sentinel import logs

    logs.setup(args.log_level, args.log_json)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "check":
        from sentinel.check import check

        return check(Path(args.config), strict=args.strict)
    if args.command == "test":
        from sentinel.rules.testing import main as run_tests

        return run_tests(args.files, junit=args.junit, run=args.run)
    if args.command == "backtest":
        from sentinel import cli_backtest

        return cli_backtest.run(args)
    if args.command == "ack":
        from sentinel import cli_ack

        return cli_ack.run(args)
    if args.command in ("silence", "alerts"):
        from sentinel import cli_silence

        return cli_silence.run(args)
    if args.command == "run":
        return _run(Path(args.config))
    if args.command == "demo":
        from sentinel.demo import demo

        return _asyncio_main(demo(speed=args.speed, port=args.port, duration=args.duration))
    parser.error(f"unknown command {args.command}")
    return 2


def _run(path: Path) -> int:
    from sentinel.config import load_config
    from sentinel.daemon import Daemon
    from sentinel.notify.located import all_integrations
    from sentinel.yamlfile import ConfigError

    try:
        loaded = load_config(path)
        all_integrations(loaded.path, loaded.config)  # an unusable URL is a config error, before anything starts
        daemon = Daemon(loaded)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    from sentinel.gc_tuning import tune_for_daemon

    tune_for_daemon()
    return _asyncio_main(daemon.run_forever())


def _asyncio_main(coro: object) -> int:
    from sentinel.web.server import ListenError

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(coro)  # type: ignore[arg-type]
    except ListenError as exc:
        print(f"sentinel: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
