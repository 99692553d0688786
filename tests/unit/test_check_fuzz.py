"""Bad input for `sentinel check`: hundreds of mutated rule files, never a traceback.

Every mutated file must end either as success or as at least one `file:line:col: message` line for that
file, with exit code 0 or 1 — the checker's own verdict decides which, the contract is the output shape.
Seeded, so a failure reproduces; the seed and the mutations are in the assertion message.
"""

from __future__ import annotations

import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sentinel.check import check

SEED = 20261126
CASES = 250

RULES = """\
groups:
  - name: market-data
    pipelines: {source: airflow-prod, pipeline: "market_data_*", tags: [market-data]}
    calendar: XNYS
    labels: {team: market-data}
    rules:
      - alert: PipelineFailed
        when: failed
        consecutive: 1
        for: 5m
        keep_firing_for: 10m
        severity: critical
        annotations:
          summary: "{{ pipeline }} run {{ run_id }}{% if failed_tasks %} ({{ failed_tasks | join(',') }}){% endif %}"
          runbook_url: runbooks/PipelineFailed.md
      - alert: TaskFailed
        when: failed
        level: task
        tasks: "load_*"
        annotations:
          runbook_url: https://wiki.example.com/TaskFailed
      - alert: PricesLate
        when: deadline
        deadline: close + 45m
        timezone: America/New_York
        severity: critical
        annotations:
          runbook_url: runbooks/PipelineFailed.md
  - name: platform
    rules:
      - alert: SourceDown
        when: source_down
        for: 1m
        max_heartbeat_age: 90s
        annotations:
          summary: "{{ source }}: {{ component }} is down"
          runbook_url: runbooks/PipelineFailed.md
"""

CONFIG = """\
sources: []
rule_files: [rules.yaml]
receivers: [{name: console, console: true}]
route: {receiver: console}
"""

WRONG_VALUES = [
    "[1, 2]",
    "{a: 1}",
    "123",
    "true",
    "null",
    "~",
    "''",
    "-1",
    "3.5",
    "[",
    "{",
    "&a",
    "*nope",
    "!!binary x",
]
HUGE = ["1e400", "99999999999999999999999999999", "-99999999999999999999", "1e308d", "999999999999y", ".inf", "-.inf"]
BAD_DURATIONS = ["5x", "1h30m", "-5m", "1e999s", "10 ms", "m", "1.2.3s", "5mm", "ninety seconds", "0x10s"]
BAD_JINJA = ["{{ pipeline ", "{% if %}", "{{ unknown_field }}", "{{ x | nofilter }}", "{% for %}{% endfor", "{{ }}"]
UNICODE = ["\u00e9", "\u202e", "\u200b", "\ufeff", "\u2028", "\x00", "\x1b[31m", "🚨", "中文", "\U0010fffd", "\x85"]


def _lines(text: str) -> list[str]:
    return text.split("\n")


def delete_line(r: random.Random, t: str) -> str:
    ls = _lines(t)
    del ls[r.randrange(len(ls))]
    return "\n".join(ls)


def duplicate_line(r: random.Random, t: str) -> str:
    ls = _lines(t)
    i = r.randrange(len(ls))
    ls.insert(i, ls[i])
    return "\n".join(ls)


def swap_lines(r: random.Random, t: str) -> str:
    ls = _lines(t)
    i, j = r.randrange(len(ls)), r.randrange(len(ls))
    ls[i], ls[j] = ls[j], ls[i]
    return "\n".join(ls)


def reindent(r: random.Random, t: str) -> str:
    ls = _lines(t)
    i = r.randrange(len(ls))
    shift = r.choice([-4, -2, -1, 1, 2, 3])
    ls[i] = " " * shift + ls[i] if shift > 0 else ls[i][-shift:]
    return "\n".join(ls)


def _replace_value(r: random.Random, t: str, choices: list[str]) -> str:
    ls = _lines(t)
    keyed = [i for i, line in enumerate(ls) if re.match(r"^\s*-?\s*[a-z_]+:\s*\S", line)]
    i = r.choice(keyed)
    key = ls[i].split(":", 1)[0]
    ls[i] = f"{key}: {r.choice(choices)}"
    return "\n".join(ls)


def wrong_type(r: random.Random, t: str) -> str:
    return _replace_value(r, t, WRONG_VALUES)


def huge_number(r: random.Random, t: str) -> str:
    return _replace_value(r, t, HUGE)


def bad_duration(r: random.Random, t: str) -> str:
    key = r.choice(["for", "keep_firing_for", "max_heartbeat_age"])
    return re.sub(rf"(?m)^(\s*){key}: .*$", lambda m: f"{m.group(1)}{key}: {r.choice(BAD_DURATIONS)}", t)


def bad_jinja(r: random.Random, t: str) -> str:
    return t.replace("{{ pipeline }}", r.choice(BAD_JINJA), 1)


def random_unicode(r: random.Random, t: str) -> str:
    i = r.randrange(len(t) + 1)
    return t[:i] + r.choice(UNICODE) + t[i:]


def truncate(r: random.Random, t: str) -> str:
    return t[: r.randrange(len(t))]


def insert_tab(r: random.Random, t: str) -> str:
    ls = _lines(t)
    i = r.randrange(len(ls))
    j = r.randrange(len(ls[i]) + 1)
    ls[i] = ls[i][:j] + "\t" + ls[i][j:]
    return "\n".join(ls)


MUTATIONS: list[Callable[[random.Random, str], str]] = [
    delete_line,
    duplicate_line,
    swap_lines,
    reindent,
    wrong_type,
    huge_number,
    bad_duration,
    bad_jinja,
    random_unicode,
    truncate,
    insert_tab,
]


def mutants(n: int, seed: int = SEED) -> list[tuple[str, str]]:
    r = random.Random(seed)
    out = []
    for _ in range(n):
        text, names = RULES, []
        for _ in range(r.choice([1, 1, 2, 3])):
            m = r.choice(MUTATIONS)
            text = m(r, text)
            names.append(m.__name__)
        out.append(("+".join(names), text))
    return out


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "PipelineFailed.md").write_text("# PipelineFailed\n")
    (tmp_path / "sentinel.yaml").write_text(CONFIG)
    (tmp_path / "rules.yaml").write_text(RULES)
    return tmp_path


def _verdict_ok(rc: int, out: str, err: str, rules: Path) -> str | None:
    """None if the output keeps the contract, else why not."""
    text = out + err
    if rc not in (0, 1):
        return f"exit code {rc}"
    if "Traceback" in text or "internal error" in text:
        return "a crash reached the user"
    located = re.compile(rf"^{re.escape(str(rules))}:\d+:\d+: \S", re.M)
    if rc == 1 and not located.search(err):
        return "exit 1 without a file:line:col line for the rule file"
    if rc == 0 and not out.rstrip().splitlines()[-1].endswith(("ok", "warning(s))")):
        return "exit 0 without saying ok"
    return None


def test_seed_file_is_valid(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check(workspace / "sentinel.yaml", strict=True) == 0, capsys.readouterr()


def test_mutated_rule_files_in_process(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules, config = workspace / "rules.yaml", workspace / "sentinel.yaml"
    failures: list[str] = []
    verdicts = {0: 0, 1: 0}
    for i, (names, text) in enumerate(mutants(CASES)):
        rules.write_text(text, encoding="utf-8")
        try:
            rc = check(config)
        except BaseException as exc:
            failures.append(f"case {i} ({names}): raised {type(exc).__name__}: {exc}\n{text}")
            continue
        out, err = capsys.readouterr()
        why = _verdict_ok(rc, out, err, rules)
        if why:
            failures.append(f"case {i} ({names}): {why}\n--- file ---\n{text}\n--- output ---\n{out}{err}")
        verdicts[rc] = verdicts.get(rc, 0) + 1
    assert not failures, f"{len(failures)} of {CASES} cases broke the contract:\n\n" + "\n\n".join(failures[:5])
    # the mutations must exercise both verdicts, or the test proves little
    assert verdicts[1] > CASES // 2 and verdicts[0] > 0, verdicts


def test_mutated_rule_files_via_subprocess(tmp_path: Path) -> None:
    """The real command line, a few times in parallel: what a user sees, including the exit code."""
    cases = mutants(3, seed=SEED + 1)
    procs = []
    for i, (_names, text) in enumerate(cases):
        d = tmp_path / f"c{i}"
        (d / "runbooks").mkdir(parents=True)
        (d / "runbooks" / "PipelineFailed.md").write_text("# PipelineFailed\n")
        (d / "sentinel.yaml").write_text(CONFIG)
        (d / "rules.yaml").write_text(text, encoding="utf-8")
        cmd = [sys.executable, "-m", "sentinel", "check", "-c", str(d / "sentinel.yaml")]
        procs.append((d, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for (d, proc), (names, text) in zip(procs, cases, strict=True):
        out, err = proc.communicate(timeout=60)
        why = _verdict_ok(proc.returncode, out, err, d / "rules.yaml")
        assert why is None, f"{names}: {why}\n--- file ---\n{text}\n--- output ---\n{out}{err}"
