from __future__ import annotations

from pathlib import Path

import pytest

from sentinel.check import check
from sentinel.config import load_config
from sentinel.yamlfile import ConfigError

GOOD = """\
sources:
  - name: airflow-prod
    kind: airflow
    url: http://127.0.0.1:8080
    username: sentinel
    password: ${AIRFLOW_PASSWORD}
    poll_interval: 15s
    labels: {env: prod}
  - name: prefect-prod
    kind: prefect
    url: http://127.0.0.1:4200/api
    auth_string_file: secret.txt
rule_files: [rules/*.yaml]
receivers:
  - name: data-slack
    urls: ["json://127.0.0.1:9/hook"]
route:
  receiver: data-slack
  group_by: [alertname, source, pipeline]
  routes:
    - matchers: ['severity="critical"']
      receiver: data-slack
      continue: true
"""


def write(tmp: Path, text: str, rules: str = "groups: []\n") -> Path:
    (tmp / "rules").mkdir(exist_ok=True)
    (tmp / "rules" / "a.yaml").write_text(rules)
    (tmp / "secret.txt").write_text("user:hunter22\n")
    p = tmp / "sentinel.yaml"
    p.write_text(text)
    return p


def errors(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=env or {})
    return [str(p) for p in info.value.problems]


def test_good_config_expands_env_and_secret_files(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, GOOD), environ={"AIRFLOW_PASSWORD": "s3cret-pw"})
    cfg = loaded.config
    assert cfg.sources[0].password is not None
    assert cfg.sources[0].password.get_secret_value() == "s3cret-pw"
    assert cfg.sources[1].auth_string is not None
    assert cfg.sources[1].auth_string.get_secret_value() == "user:hunter22"
    assert cfg.sources[0].poll_interval.total_seconds() == 15
    assert loaded.rule_paths == [tmp_path / "rules" / "a.yaml"]
    # secrets never show in a repr that might be logged
    assert "s3cret-pw" not in repr(cfg)
    assert "hunter22" not in repr(cfg)


def test_missing_env_var_points_at_the_value(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD)
    assert errors(p) == [f"{p}:6:15: environment variable AIRFLOW_PASSWORD is not set"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    poll_interval: 15s",
            "    poll_interval: 15 parsecs",
            ":7:20: sources[0].poll_interval: invalid duration",
        ),
        ("    labels: {env: prod}", "    labelz: {env: prod}", ":8:5: unknown key 'labelz'"),
        ("    kind: prefect", "    kind: dagster", ":10:11: sources[1].kind: unknown kind 'dagster'"),
        (
            "  receiver: data-slack\n  group_by",
            "  receiver: nobody\n  group_by",
            ":18:13: route.receiver: 'nobody' is not",
        ),
        ("['severity=\"critical\"']", "['severity=~\"(\"']", ":21:17: route.routes[0].matchers: invalid regular"),
        (
            "rule_files: [rules/*.yaml]",
            "rule_files: [nowhere/*.yaml]",
            ":13:14: rule_files: 'nowhere/*.yaml' matches no",
        ),
    ],
)
def test_errors_have_file_line_col(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    p = write(tmp_path, GOOD.replace(old, new))
    errs = errors(p, {"AIRFLOW_PASSWORD": "x"})
    assert any(e.startswith(f"{p}{expected}") for e in errs), errs


def test_invalid_yaml_reports_position(tmp_path: Path) -> None:
    p = write(tmp_path, "sources: [\n  - name: x\n")
    errs = errors(p)
    assert len(errs) == 1 and errs[0].startswith(f"{p}:") and "invalid YAML" in errs[0]


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD + "route:\n  receiver: data-slack\n")
    errs = errors(p, {"AIRFLOW_PASSWORD": "x"})
    assert any("duplicate key 'route'" in e for e in errs), errs


def test_check_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_PASSWORD", "x")
    good = write(tmp_path, GOOD)
    assert check(good) == 0
    bad_rules = "groups:\n  - name: g\n    rules:\n      - alert: X\n        when: failed\n        consecutiv: 2\n"
    write(tmp_path, GOOD, rules=bad_rules)
    assert check(good) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'rules' / 'a.yaml'}:6:9: unknown key 'consecutiv'" in err
