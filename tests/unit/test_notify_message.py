"""What a notification says, per channel kind: title, body, and an SMS line that always fits."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from sentinel.alerting.alert import Alert
from sentinel.alerting.stage import FlushContext
from sentinel.notify.message import MAX_LISTED, SMS_LIMIT, Message, render, sms_cost

NOW = datetime(2024, 5, 1, 15, 0, tzinfo=UTC)
RUNBOOK = "https://runbooks.example.com/PipelineFailed.md"
GROUP = {"alertname": "PipelineFailed", "source": "airflow-prod", "pipeline": "market_data_ingest"}


def ctx(**group_labels: str) -> FlushContext:
    return FlushContext(
        now=NOW,
        group_key='{}:{alertname="PipelineFailed"}',
        group_labels=group_labels or GROUP,
        receiver="data-slack",
        repeat_interval=timedelta(hours=4),
    )


def alert(
    task: str = "extract_prices",
    *,
    resolved: bool = False,
    started_min_ago: int = 30,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    generator_url: str | None = None,
) -> Alert:
    base = {**GROUP, "severity": "critical", "task": task, **(labels or {})}
    ann = {"summary": f"{base['pipeline']} task {task} failed", "runbook_url": RUNBOOK}
    ann.update(annotations or {})
    return Alert.of(
        {k: v for k, v in base.items() if v},
        {k: v for k, v in ann.items() if v},
        starts_at=NOW - timedelta(minutes=started_min_ago),
        ends_at=NOW - timedelta(minutes=1) if resolved else None,
        generator_url=generator_url,
    )


# --- titles -------------------------------------------------------------------------------------------


def test_title_counts_firing_alerts_like_alertmanager_subject() -> None:
    alerts = [alert("a"), alert("b"), alert("c", resolved=True)]
    msg = render(ctx(), alerts, "generic")
    assert msg.title == "[FIRING:2] PipelineFailed market_data_ingest (airflow-prod)"


def test_title_of_an_all_resolved_group() -> None:
    msg = render(ctx(), [alert("a", resolved=True), alert("b", resolved=True)], "email")
    assert msg.title == "[RESOLVED] PipelineFailed market_data_ingest (airflow-prod)"


def test_state_is_taken_at_the_flush_time_not_wall_time() -> None:
    # Ends in the future relative to ctx.now: still firing at this flush.
    later = Alert.of({**GROUP}, {"summary": "s"}, starts_at=NOW, ends_at=NOW + timedelta(minutes=5))
    assert render(ctx(), [later], "generic").title.startswith("[FIRING:1] ")
    exactly_now = Alert.of({**GROUP}, {"summary": "s"}, starts_at=NOW, ends_at=NOW)
    assert render(ctx(), [exactly_now], "generic").title.startswith("[RESOLVED] ")


def test_title_keeps_only_labels_the_group_shares() -> None:
    two_pipelines = [alert("a"), alert("b", labels={"pipeline": "portfolio_risk"})]
    assert render(ctx(), two_pipelines, "generic").title == "[FIRING:2] PipelineFailed (airflow-prod)"
    two_sources = [alert("a"), alert("b", labels={"source": "prefect-prod"})]
    assert render(ctx(), two_sources, "generic").title == "[FIRING:2] PipelineFailed market_data_ingest"


def test_title_falls_back_to_group_labels_when_name_and_pipeline_differ() -> None:
    alerts = [
        alert("a", labels={"alertname": "PipelineFailed", "pipeline": "p1", "team": "md"}),
        alert("b", labels={"alertname": "PricesLate", "pipeline": "p2", "team": "md"}),
    ]
    msg = render(ctx(team="md", source="airflow-prod"), alerts, "generic")
    assert msg.title == "[FIRING:2] md (airflow-prod)"


def test_title_is_one_line_even_with_newlines_in_labels() -> None:
    msg = render(ctx(), [alert(labels={"pipeline": "multi\nline"})], "email")
    assert "\n" not in msg.title
    assert msg.title == "[FIRING:1] PipelineFailed multi line (airflow-prod)"


# --- text bodies --------------------------------------------------------------------------------------


def test_text_body_has_summary_differing_labels_common_labels_once_runbook_and_start() -> None:
    msg = render(ctx(), [alert("extract_prices"), alert("load_prices", started_min_ago=10)], "email")
    assert msg.format == "text"
    body = msg.body
    assert "- market_data_ingest task extract_prices failed" in body
    assert "- market_data_ingest task load_prices failed" in body
    assert "task=extract_prices" in body and "task=load_prices" in body
    # Shared labels are listed once, alertname first, not under every alert.
    assert body.count("severity=critical") == 1
    assert (
        "Labels: alertname=PipelineFailed, pipeline=market_data_ingest, severity=critical, source=airflow-prod" in body
    )
    assert body.count(RUNBOOK) == 1
    assert f"Runbook: {RUNBOOK}" in body
    assert "started 2024-05-01 14:30:00 UTC" in body
    assert "started 2024-05-01 14:50:00 UTC" in body
    assert not body.startswith("[FIRING")  # the title is the subject, not repeated in the body


def test_oldest_alert_is_listed_first() -> None:
    body = render(ctx(), [alert("newer", started_min_ago=5), alert("older", started_min_ago=50)], "generic").body
    assert body.index("older") < body.index("newer")


def test_per_alert_runbooks_when_they_differ() -> None:
    alerts = [
        alert("a", annotations={"runbook_url": "https://rb.example.com/a.md"}),
        alert("b", annotations={"runbook_url": "https://rb.example.com/b.md"}),
    ]
    body = render(ctx(), alerts, "generic").body
    assert "runbook: https://rb.example.com/a.md" in body
    assert "runbook: https://rb.example.com/b.md" in body
    assert "Runbook:" not in body


def test_summary_falls_back_to_description_then_alertname() -> None:
    described = alert("a", annotations={"summary": "", "description": "the run\nwas killed"})
    bare = alert("b", annotations={"summary": "", "runbook_url": ""})
    body = render(ctx(), [described, bare], "generic").body
    assert "- the run was killed" in body
    assert "- PipelineFailed" in body


def test_mixed_group_has_firing_then_resolved_sections_with_resolve_time() -> None:
    body = render(ctx(), [alert("gone", resolved=True), alert("still")], "console").body
    assert body.index("Firing:") < body.index("still") < body.index("Resolved:") < body.index("gone")
    assert "resolved 2024-05-01 14:59:00 UTC" in body


def test_uniform_group_has_no_section_headings() -> None:
    body = render(ctx(), [alert("a"), alert("b")], "generic").body
    assert "Firing:" not in body and "Resolved:" not in body


def test_long_groups_are_capped_with_a_count_of_the_rest() -> None:
    alerts = [alert(f"task_{i:02d}", started_min_ago=60 - i) for i in range(MAX_LISTED + 5)]
    body = render(ctx(), alerts, "email").body
    assert body.count("\n- ") + body.startswith("- ") == MAX_LISTED
    assert "... and 5 more" in body
    assert "task_09" in body and "task_10" not in body


def test_cap_counts_resolved_alerts_after_firing_ones() -> None:
    alerts = [alert(f"f{i}") for i in range(3)] + [alert(f"r{i}", resolved=True) for i in range(3)]
    body = render(ctx(), alerts, "generic", max_alerts=4).body
    assert all(f"f{i}" in body for i in range(3))
    assert "task r0 failed" in body and "r1" not in body
    assert "... and 2 more" in body


def test_generator_url_is_linked() -> None:
    body = render(ctx(), [alert(generator_url="http://airflow:8080/dags/x/grid")], "generic").body
    assert "link: http://airflow:8080/dags/x/grid" in body


@pytest.mark.parametrize("kind", ["console", "generic", "webhook", "email", "something-new"])
def test_non_slack_non_sms_kinds_are_plain_text_with_title(kind: str) -> None:
    msg = render(ctx(), [alert()], kind)
    assert isinstance(msg, Message)
    assert msg.format == "text"
    assert msg.title.startswith("[FIRING:1] PipelineFailed")
    assert "*" not in msg.body and "<" not in msg.body


def test_empty_group_renders_without_error() -> None:
    msg = render(ctx(), [], "generic")
    assert msg.title.startswith("[RESOLVED]")


# --- Slack --------------------------------------------------------------------------------------------


def test_slack_body_is_mrkdwn_with_runbook_link() -> None:
    msg = render(ctx(), [alert("a"), alert("b")], "slack")
    assert msg.format == "markdown"
    assert msg.title == "[FIRING:2] PipelineFailed market_data_ingest (airflow-prod)"
    assert "• *market_data_ingest task a failed*" in msg.body
    assert f"*Runbook:* <{RUNBOOK}>" in msg.body
    assert "`task=a`" in msg.body and "`severity=critical`" in msg.body
    assert "**" not in msg.body  # Slack bold is a single asterisk, not CommonMark's double


def test_slack_per_alert_links_use_slack_anchor_syntax() -> None:
    alerts = [
        alert("a", annotations={"runbook_url": "https://rb.example.com/a.md"}, generator_url="http://af/run/1"),
        alert("b", annotations={"runbook_url": "https://rb.example.com/b.md"}),
    ]
    body = render(ctx(), alerts, "slack").body
    assert "<https://rb.example.com/a.md|Runbook>" in body
    assert "<http://af/run/1|Open run>" in body


def test_slack_relative_runbook_is_shown_not_linked() -> None:
    body = render(ctx(), [alert(annotations={"runbook_url": "runbooks/PipelineFailed.md"})], "slack").body
    assert "`runbooks/PipelineFailed.md`" in body
    assert "<runbooks/" not in body


def test_slack_code_spans_survive_backticks_in_values() -> None:
    body = render(ctx(), [alert("a", labels={"note": "x`y"}), alert("b")], "slack").body
    assert "`note=x'y`" in body


def test_slack_resolved_group() -> None:
    msg = render(ctx(), [alert("a", resolved=True)], "slack")
    assert msg.title.startswith("[RESOLVED] ")
    assert "resolved 2024-05-01 14:59:00 UTC" in msg.body


# --- SMS ----------------------------------------------------------------------------------------------


def test_sms_is_one_line_with_state_name_pipeline_source_and_summary() -> None:
    msg = render(ctx(), [alert("extract_prices")], "sms")
    assert msg.format == "text"
    assert msg.title == ""  # SMS gateways fold a title into the body; everything is in the one line
    assert msg.body == (
        "[FIRING:1] PipelineFailed market_data_ingest (airflow-prod): market_data_ingest task extract_prices failed"
    )


def test_sms_counts_the_rest_of_the_group() -> None:
    body = render(ctx(), [alert("a"), alert("b"), alert("c", resolved=True)], "sms").body
    assert body.startswith("[FIRING:2] PipelineFailed market_data_ingest")
    assert body.endswith(" (+2 more)")


def test_sms_resolved() -> None:
    body = render(ctx(), [alert("a", resolved=True)], "sms").body
    assert body.startswith("[RESOLVED] PipelineFailed market_data_ingest (airflow-prod): ")


def test_sms_long_summary_is_cut_at_a_word_and_marked() -> None:
    words = " ".join(f"word{i}" for i in range(60))
    first = alert(annotations={"summary": words}, started_min_ago=50)
    body = render(ctx(), [first, alert("b")], "sms").body
    assert sms_cost(body) <= SMS_LIMIT
    assert body.startswith("[FIRING:2] PipelineFailed market_data_ingest (airflow-prod): word0 word1")
    assert body.endswith("... (+1 more)")
    cut = body.removesuffix("... (+1 more)")
    assert cut.split(" ")[-1].startswith("word")  # whole words only
    assert cut.split(" ")[-1] in words.split(" ")


def test_sms_drops_source_before_it_drops_the_summary() -> None:
    long_source = "airflow-" + "x" * 70
    a = alert(labels={"source": long_source})
    body = render(ctx(), [a], "sms").body
    assert sms_cost(body) <= SMS_LIMIT
    assert long_source not in body
    assert "PipelineFailed market_data_ingest: market_data_ingest task" in body


def test_sms_keeps_state_alertname_and_pipeline_when_labels_are_huge() -> None:
    a = alert(labels={"alertname": "A" * 120, "pipeline": "p" * 200, "source": "s" * 100})
    body = render(
        ctx(), [a, alert("b", labels={"alertname": "A" * 120, "pipeline": "p" * 200, "source": "s" * 100})], "sms"
    ).body
    assert sms_cost(body) <= SMS_LIMIT
    assert body.startswith("[FIRING:2] AAAA")
    assert " ppp" in body
    assert body.endswith("(+1 more)")


def test_sms_shorter_name_is_kept_whole_when_the_other_is_huge() -> None:
    a = alert(labels={"pipeline": "p" * 400})
    body = render(ctx(), [a], "sms").body
    assert sms_cost(body) <= SMS_LIMIT
    assert body.startswith("[FIRING:1] PipelineFailed ppp")


def test_sms_cost_counts_gsm_extension_and_astral_characters_double() -> None:
    assert sms_cost("abc") == 3
    assert sms_cost("[x]") == 5  # brackets are GSM-7 extension characters: escape + char
    assert sms_cost("€") == 2
    assert sms_cost("😀") == 2  # a UTF-16 surrogate pair
    assert sms_cost("é市") == 2


@pytest.mark.parametrize(
    "summary",
    [
        "市場データの取り込みが失敗しました " * 10,
        "😀🔥 prices late " * 20,
        "{curly} [square] ~tilde~ ^caret^ |pipe| \\back\\ €euro " * 5,
        "line one\nline two\r\n\tline three " * 12,
        "x" * 500,
        "",
    ],
)
def test_sms_is_always_one_line_within_160(summary: str) -> None:
    pipeline = {"pipeline": "ポートフォリオ_risk_🌍"}
    a = alert(annotations={"summary": summary}, labels=pipeline)
    body = render(ctx(), [a, alert("b", labels=pipeline)], "sms").body
    assert "\n" not in body and "\r" not in body and "\t" not in body
    assert len(body) <= SMS_LIMIT
    assert sms_cost(body) <= SMS_LIMIT
    assert len(body.encode("utf-16-le")) // 2 <= SMS_LIMIT
    assert body.startswith("[FIRING:2] PipelineFailed ポートフォリオ_risk_🌍")


def test_sms_never_exceeds_limit_for_random_inputs() -> None:
    rng = random.Random(20240501)
    alphabet = "abcXYZ _-[]{}€😀市é\n\t|~^\\" + "market_data_ingest"
    for _ in range(400):

        def text(n: int) -> str:
            return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, n)))

        alerts = [
            alert(
                f"t{i}",
                resolved=rng.random() < 0.3,
                labels={"alertname": text(200) or "A", "pipeline": text(200), "source": text(80)},
                annotations={"summary": text(300)},
            )
            for i in range(rng.randint(1, 4))
        ]
        limit = rng.choice([160, 140, 67])
        body = render(ctx(), alerts, "sms", sms_limit=limit).body
        assert sms_cost(body) <= limit, body
        assert "\n" not in body
        assert body.startswith("[FIRING:") or body.startswith("[RESOLVED]")


def test_sms_limit_follows_a_shorter_gateway_cap_but_never_exceeds_160() -> None:
    a = alert(annotations={"summary": "s " * 100})
    assert sms_cost(render(ctx(), [a], "sms", sms_limit=140).body) <= 140
    assert sms_cost(render(ctx(), [a], "sms", sms_limit=1000).body) <= SMS_LIMIT
