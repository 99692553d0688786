"""`sentinel check`: every problem as file:line:col, warnings apart, `--strict`, and the real command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sentinel.check import check, problems

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
sources: []
rule_files: [rules/*.yaml]
calendars:
  desk:
    base: XNYS
receivers: [{name: console, console: true}]
route: {receiver: console}
"""

RULE = """\
groups:
  - name: g
    calendar: XNYS
    rules:
      - alert: PipelineFailed
        when: failed
        for: 5m
        annotations:
          summary: "{{ pipeline }} failed"
          runbook_url: runbooks/PipelineFailed.md
"""


def setup(tmp_path: Path, rules: str = RULE, config: str = CONFIG, **more: str) -> Path:
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "runbooks").mkdir(exist_ok=True)
    (tmp_path / "runbooks" / "PipelineFailed.md").write_text("# PipelineFailed\n")
    (tmp_path / "rules" / "a.yaml").write_text(rules)
    for name, text in more.items():
        (tmp_path / "rules" / f"{name}.yaml").write_text(text)
    (tmp_path / "sentinel.yaml").write_text(config)
    return tmp_path / "sentinel.yaml"


def lines(config: Path) -> list[str]:
    return [str(p) for p in problems(config)]


def test_valid_files_pass_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path)
    assert check(cfg, strict=True) == 0
    assert capsys.readouterr().out.strip() == f"{cfg}: ok"


def test_shipped_rules_and_runbooks_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sentinel.yaml").write_text(CONFIG.replace("rules/*.yaml", f"{ROOT}/rules/*.yaml"))
    assert check(tmp_path / "sentinel.yaml") == 0, capsys.readouterr()


@pytest.mark.parametrize(
    ("old", "new", "where", "message"),
    [
        ("calendar: XNYS", "calendar: XNYZ", ":3:15:", "calendar: unknown calendar 'XNYZ'; built in or defined"),
        ("for: 5m", "for: 5x", ":7:14:", "invalid duration '5x'"),
        ("for: 5m", "fro: 5m", ":7:9:", "unknown key 'fro'"),
        ("{{ pipeline }} failed", "{{ pipeline } failed", ":9:20:", "template does not compile"),
        ("{{ pipeline }} failed", "{{ pipeline | nofilter }}", ":9:20:", "No filter named 'nofilter'"),
        ("{{ pipeline }} failed", "{{ colour }}", ":9:20:", "unknown template field(s) colour for when: failed"),
        ("runbooks/PipelineFailed.md", "runbooks/Nope.md", ":10:24:", "annotations.runbook_url: runbooks/Nope.md not"),
        ("for: 5m", "for: 1.0e+400", ":7:14:", "is too long (over a century)"),
        ("for: 5m", "for: 5m\x00", ":7:16:", "invalid YAML: character U+0000 is not allowed"),
        ("when: failed", "when: faild", ":6:15:", "unknown value 'faild'"),
    ],
)
def test_rule_problems_have_file_line_col(tmp_path: Path, old: str, new: str, where: str, message: str) -> None:
    assert old in RULE
    cfg = setup(tmp_path, RULE.replace(old, new, 1))
    found = lines(cfg)
    prefix = f"{tmp_path / 'rules' / 'a.yaml'}{where} "
    assert any(x.startswith(prefix) and message in x for x in found), found


def test_deadline_times_and_timezones(tmp_path: Path) -> None:
    deadline = RULE + (
        "      - alert: Late\n        when: deadline\n        deadline: close + 45m\n"
        "        timezone: America/New_York\n        calendar: desk\n"
        "        annotations: {runbook_url: runbooks/PipelineFailed.md}\n"
    )
    assert lines(setup(tmp_path, deadline)) == []
    a = tmp_path / "rules" / "a.yaml"
    found = lines(setup(tmp_path, deadline.replace("America/New_York", "America/Gotham")))
    assert any(x.startswith(f"{a}:14:19: ") and "America/Gotham" in x for x in found), found
    found = lines(setup(tmp_path, deadline.replace("close + 45m", "close + 45x")))
    assert any(x.startswith(f"{a}:13:19: ") for x in found), found
    found = lines(setup(tmp_path, deadline.replace("calendar: desk", "calendar: moon")))
    assert any(x.startswith(f"{a}:15:19: ") and "unknown calendar 'moon'" in x for x in found), found


def test_runbook_resolution(tmp_path: Path) -> None:
    cfg = setup(tmp_path, RULE.replace("runbooks/PipelineFailed.md", "runbooks/Local.md"))
    assert any("runbooks/Local.md not found" in x for x in lines(cfg))
    # next to the rule file (its parent directories are searched after the config's)
    (tmp_path / "rules" / "runbooks").mkdir()
    (tmp_path / "rules" / "runbooks" / "Local.md").write_text("x")
    assert lines(cfg) == []
    for url in ("https://wiki.example.com/nothing-here", "runbooks/{{ alertname }}.md", "runbooks/PipelineFailed.md#x"):
        assert lines(setup(tmp_path, RULE.replace("runbooks/PipelineFailed.md", url))) == [], url


def test_warnings_and_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path, RULE.replace("          runbook_url: runbooks/PipelineFailed.md\n", ""))
    assert check(cfg) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'rules' / 'a.yaml'}:5:9: warning: rule 'PipelineFailed' has no annotations.runbook_url" in out
    assert out.rstrip().endswith("ok (1 warning(s))")
    assert check(cfg, strict=True) == 1
    assert "1 error(s), 1 of them warning(s) (--strict)" in capsys.readouterr().err


def test_names_unique_across_files_and_in_groups(tmp_path: Path) -> None:
    cfg = setup(tmp_path, b=RULE)
    assert any(
        x.startswith(f"{tmp_path / 'rules' / 'b.yaml'}:2:11: ") and "group 'g' is already defined at" in x
        for x in lines(cfg)
    )
    twice = RULE + RULE.split("rules:\n", 1)[1]
    assert any(
        "alert names must be unique in a group; repeated: PipelineFailed" in x for x in lines(setup(tmp_path, twice))
    )


def test_config_matchers_and_time_intervals(tmp_path: Path) -> None:
    bad = CONFIG.replace(
        "route: {receiver: console}",
        "route:\n  receiver: console\n  routes:\n"
        "    - matchers: ['severity=~\"(\"']\n      mute_time_intervals: [nights]\n",
    )
    found = lines(setup(tmp_path, config=bad))
    assert any(x.startswith(f"{tmp_path / 'sentinel.yaml'}:10:17: ") for x in found), found
    ok_matchers = bad.replace('severity=~\\"(\\"', 'severity="critical"').replace(
        "['severity=~\"(\"']", "['severity=\"critical\"']"
    )
    found = lines(setup(tmp_path, config=ok_matchers))
    assert found == [
        f"{tmp_path / 'sentinel.yaml'}:11:29: mute_time_intervals: 'nights' is not defined under time_intervals"
    ]


def test_command_line(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "sentinel", "check", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)

    cfg = setup(tmp_path, RULE.replace("          runbook_url: runbooks/PipelineFailed.md\n", ""))
    ok = run("-c", str(cfg))
    assert ok.returncode == 0 and "warning: rule 'PipelineFailed'" in ok.stdout, ok.stderr
    strict = run("-c", str(cfg), "--strict")
    assert strict.returncode == 1 and "warning: rule 'PipelineFailed'" in strict.stderr
    setup(tmp_path, RULE.replace("for: 5m", "for: soon"))
    bad = run("--config", str(cfg))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert f"{tmp_path / 'rules' / 'a.yaml'}:7:14: groups[0].rules[0].for: invalid duration 'soon'" in bad.stderr


def test_cli_docs_cover_every_command_and_flag() -> None:
    import argparse

    from sentinel.cli import build_parser

    doc = (ROOT / "docs" / "cli.md").read_text()
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in parser._actions:
        for flag in action.option_strings:
            assert f"`{flag}" in doc, flag
    for name, command in sub.choices.items():
        assert f"## `sentinel {name}`" in doc, name
        for action in command._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"`{flag}" in doc, f"sentinel {name} {flag}"


def test_control_characters_in_the_config_are_located(tmp_path: Path) -> None:
    cfg = setup(tmp_path, config=CONFIG.replace("sources: []", "sources: []\x1b"))
    assert lines(cfg) == [f"{cfg}:1:12: invalid YAML: character U+001B is not allowed"]


def test_unusable_receiver_urls_are_located_and_redacted(tmp_path: Path) -> None:
    config = CONFIG.replace(
        "receivers: [{name: console, console: true}]",
        "receivers:\n"
        "  - name: console\n"
        "    urls:\n"
        '      - "json://127.0.0.1:9/ok"\n'
        '      - {url: "zzz://TopSecretTok@h", tag: a}\n'
        '      - "slack://Bad-Token-One"\n'
        '    webhook: {url: "ftp://Bad-Token-Two@example.com/x"}',
    )
    cfg = setup(tmp_path, config=config)
    found = [p for p in problems(cfg) if "receiver 'console'" in p.message]
    assert [(p.line, p.col, p.message.split(":")[1].strip()) for p in found] == [
        (10, 15, "receiver 'console' urls[1]"),
        (11, 9, "receiver 'console' urls[2]"),
        (12, 20, "receiver 'console' webhook"),
    ]
    assert not any(secret in p.message for p in found for secret in ("TopSecretTok", "Bad-Token-One", "Bad-Token-Two"))


def test_run_refuses_an_unusable_url_with_its_location(tmp_path: Path) -> None:
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text('receivers:\n  - name: r\n    urls: ["slack://Bad-Token-One"]\nroute: {receiver: r}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "sentinel", "run", "-c", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert f"{cfg}:3:12: receivers: receiver 'r' urls[0]: apprise cannot load this slack:// URL" in proc.stderr
    assert "Traceback" not in proc.stderr and "Bad-Token-One" not in proc.stderr + proc.stdout


def test_run_says_when_its_listen_address_is_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "sentinel.yaml"
        cfg.write_text(
            "receivers: [{name: r, console: true}]\nroute: {receiver: r}\n"
            f'server: {{listen: "127.0.0.1:{port}"}}\nstore: {{path: state.db}}\n'
        )
        proc = subprocess.run(
            [sys.executable, "-m", "sentinel", "run", "-c", str(cfg)], capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 1
    assert f"sentinel: cannot listen on 127.0.0.1:{port} (server.listen):" in proc.stderr
    assert "address already in use" in proc.stderr and "Traceback" not in proc.stderr
