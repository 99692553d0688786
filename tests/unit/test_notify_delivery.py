"""Delivery through real local servers: an aiohttp sink for apprise json:// and Alertmanager's webhook JSON,
aiosmtpd for email; Slack and Twilio payloads by intercepting apprise's HTTP call; and no secret anywhere."""

from __future__ import annotations

import asyncio
import io
import logging
import mailbox
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest
import responses
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult
from loguru import logger
from pydantic import BaseModel, SecretStr

from sentinel.alerting.alert import Alert
from sentinel.alerting.delivery import delivery_options
from sentinel.alerting.dispatch import Dispatcher
from sentinel.alerting.nflog import NotificationLog, split_key
from sentinel.alerting.pipeline import build_pipelines
from sentinel.alerting.route import Route
from sentinel.alerting.stage import FlushContext
from sentinel.clock import FrozenClock
from sentinel.config import load_config
from sentinel.notify.apprise_integration import AppriseIntegration, load_apprise_url
from sentinel.notify.base import DeliveryError
from sentinel.notify.build import build_integrations
from sentinel.notify.console import ConsoleIntegration
from sentinel.notify.errors import NotifyConfigError
from sentinel.notify.message import render
from sentinel.notify.redact import redact_url, register_secret_url, scrub
from sentinel.notify.webhook import ZERO_TIME, WebhookIntegration, payload, rfc3339
from sentinel.yamlfile import ConfigError

try:
    from sentinel.config import ReceiverConfig, WebhookConfig
except ImportError:  # the config module is written alongside; the fields are the contract

    class WebhookConfig(BaseModel):  # type: ignore[no-redef]
        url: SecretStr
        send_resolved: bool = True
        max_alerts: int = 0
        timeout: timedelta = timedelta(seconds=10)

    class ReceiverConfig(BaseModel):  # type: ignore[no-redef]
        name: str
        urls: list[SecretStr] = []
        webhook: WebhookConfig | None = None
        send_resolved: bool = True
        console: bool = False


NOW = datetime(2024, 5, 1, 15, 0, tzinfo=UTC)
RUNBOOK = "https://runbooks.example.com/PipelineFailed.md"
LABELS = {"alertname": "PipelineFailed", "source": "airflow-prod", "pipeline": "market_data_ingest"}

SLACK_TOKENS = ("T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7FQ")
SLACK_URL = "slack://{}/{}/{}/#data-alerts".format(*SLACK_TOKENS)
SLACK_ENDPOINT = "https://hooks.slack.com/services/{}/{}/{}".format(*SLACK_TOKENS)
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
TWILIO_URL = f"twilio://{TWILIO_SID}:{TWILIO_TOKEN}@+15551234567/+15557654321"


def ctx(receiver: str = "data-slack") -> FlushContext:
    return FlushContext(
        now=NOW,
        group_key='{}/{severity="critical"}:{alertname="PipelineFailed", pipeline="market_data_ingest"}',
        group_labels=dict(LABELS),
        receiver=receiver,
        repeat_interval=timedelta(hours=4),
    )


def alert(task: str = "extract_prices", *, resolved: bool = False, **labels: str) -> Alert:
    return Alert.of(
        {**LABELS, "severity": "critical", "task": task, **labels},
        {"summary": f"market_data_ingest task {task} failed & retried", "runbook_url": RUNBOOK},
        starts_at=datetime(2024, 5, 1, 14, 30, 5, 120000, tzinfo=UTC),
        ends_at=NOW - timedelta(minutes=1) if resolved else None,
        generator_url="http://airflow.internal:8080/dags/market_data_ingest/grid",
    )


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


# --- a real HTTP sink -----------------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Sink:
    port: int = 0
    received: list[Received] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)  # path -> status to answer
    gates: dict[str, asyncio.Event] = field(default_factory=dict)  # path -> hold the answer until set

    def url(self, scheme: str, path: str, userinfo: str = "") -> str:
        return f"{scheme}://{userinfo}127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(
            Received(request.method, request.path, dict(request.query), dict(request.headers), await request.read())
        )
        gate = self.gates.get(request.path)
        if gate is not None:
            await gate.wait()
        return web.Response(status=self.status.get(request.path, 200), text="sink says hi")


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = Sink()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", s.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    s.port = runner.addresses[0][1]
    yield s
    for gate in s.gates.values():
        gate.set()
    await runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a real SMTP server ---------------------------------------------------------------------------------

SMTP_USER, SMTP_PASSWORD = "sentinel", "smtp-Pa55word-xyz"


@dataclass
class Smtp:
    port: int
    maildir: Path
    logins: list[tuple[bytes, bytes]]

    def messages(self) -> list[mailbox.MaildirMessage]:
        if not self.maildir.exists():
            return []
        return list(mailbox.Maildir(self.maildir, create=False))


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[Smtp]:
    # The Mailbox handler creates its Maildir; an empty directory made beforehand would not be one.
    server = Smtp(port=free_port(), maildir=tmp_path / "maildir", logins=[])

    def authenticate(_srv: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any) -> AuthResult:
        server.logins.append((data.login, data.password))
        ok = (data.login, data.password) == (SMTP_USER.encode(), SMTP_PASSWORD.encode())
        # handled=False makes aiosmtpd answer 535 itself; its default leaves the client waiting for a reply.
        return AuthResult(success=ok, handled=False)

    controller = Controller(
        Mailbox(server.maildir),
        hostname="127.0.0.1",
        port=server.port,
        auth_require_tls=False,  # plain SMTP on loopback; apprise's mode=insecure never starts TLS
        authenticator=authenticate,
    )
    controller.start()
    yield server
    controller.stop()


# --- secrets in logs ------------------------------------------------------------------------------------


@pytest.fixture
def loguru_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    handler = logger.add(lambda m: lines.append(str(m)), level="TRACE", format="{level} {message} {exception}")
    yield lines
    logger.remove(handler)


@pytest.fixture
def stdlib_debug(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    # Everything apprise, urllib3 and httpx log, down to DEBUG, as an app that forwards stdlib logging would.
    caplog.set_level(logging.DEBUG)
    return caplog


def assert_nowhere(secrets: tuple[str, ...], *texts: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"secret {secret[:3]}… leaked into: {text[:300]}"


# --- apprise json:// to the sink ------------------------------------------------------------------------


async def test_apprise_json_delivers_title_and_rendered_body(sink: Sink) -> None:
    integration = AppriseIntegration.from_url(sink.url("json", "/notify"), index=0)
    assert (integration.name, integration.kind) == ("json[0]", "webhook")
    alerts = [alert("extract_prices"), alert("load_prices")]

    await integration.notify(ctx(), alerts)

    assert len(sink.received) == 1
    request = sink.received[0]
    assert (request.method, request.path) == ("POST", "/notify")
    doc = request.json()
    expected = render(ctx(), alerts, "webhook")
    assert doc["title"] == expected.title == "[FIRING:2] PipelineFailed market_data_ingest (airflow-prod)"
    assert doc["message"] == expected.body
    assert "market_data_ingest task extract_prices failed & retried" in doc["message"]
    assert RUNBOOK in doc["message"]
    assert doc["type"] == "failure"


async def test_apprise_resolved_group_is_sent_as_success(sink: Sink) -> None:
    integration = AppriseIntegration.from_url(sink.url("json", "/notify"))
    await integration.notify(ctx(), [alert(resolved=True)])
    doc = sink.received[0].json()
    assert doc["title"].startswith("[RESOLVED] PipelineFailed")
    assert doc["type"] == "success"


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (429, True), (408, True), (400, False), (401, False), (404, False)],
)
async def test_apprise_failures_are_classified_by_http_status(sink: Sink, status: int, retryable: bool) -> None:
    sink.status["/fail"] = status
    integration = AppriseIntegration.from_url(sink.url("json", "/fail"))
    with pytest.raises(DeliveryError) as raised:
        await integration.notify(ctx(), [alert()])
    assert raised.value.retryable is retryable
    assert f"HTTP {status}" in str(raised.value)
    assert str(raised.value).startswith("json[0]: ")
    # Apprise made one attempt; retries belong to Sentinel's retry stage and notification log.
    assert len(sink.received) == 1


async def test_apprise_connection_refused_is_retryable() -> None:
    integration = AppriseIntegration.from_url(f"json://127.0.0.1:{free_port()}/nobody-home")
    with pytest.raises(DeliveryError) as raised:
        await integration.notify(ctx(), [alert()])
    assert raised.value.retryable is True


async def test_apprise_delivery_does_not_block_the_event_loop(sink: Sink) -> None:
    # The sink runs on this same loop and holds its answer until the test releases it: if apprise's send
    # blocked the loop, the sink could not even read the request.
    sink.gates["/held"] = asyncio.Event()
    integration = AppriseIntegration.from_url(sink.url("json", "/held"))
    sending = asyncio.create_task(integration.notify(ctx(), [alert()]))
    await wait_for(lambda: len(sink.received) == 1)
    assert not sending.done()
    sink.gates["/held"].set()
    await asyncio.wait_for(sending, timeout=10)


async def test_concurrent_integrations_get_their_own_failure_reasons(sink: Sink) -> None:
    sink.status["/bad"] = 400
    sink.status["/busy"] = 503
    bad = AppriseIntegration.from_url(sink.url("json", "/bad"), index=0)
    busy = AppriseIntegration.from_url(sink.url("json", "/busy"), index=1)
    results = await asyncio.gather(bad.notify(ctx(), [alert()]), busy.notify(ctx(), [alert()]), return_exceptions=True)
    assert isinstance(results[0], DeliveryError) and isinstance(results[1], DeliveryError)
    assert (results[0].retryable, results[1].retryable) == (False, True)
    assert "HTTP 400" in str(results[0]) and "503" not in str(results[0])
    assert "HTTP 503" in str(results[1]) and "400" not in str(results[1])


# --- Alertmanager's webhook JSON to the sink -------------------------------------------------------------


def test_rfc3339_matches_go_time_json() -> None:
    assert rfc3339(datetime(2024, 5, 1, 14, 30, 5, tzinfo=UTC)) == "2024-05-01T14:30:05Z"
    assert rfc3339(datetime(2024, 5, 1, 14, 30, 5, 120000, tzinfo=UTC)) == "2024-05-01T14:30:05.12Z"
    plus_two = datetime(2024, 5, 1, 16, 30, 5, tzinfo=UTC).astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
    assert rfc3339(plus_two) == "2024-05-01T16:30:05Z"
    assert rfc3339(None) == ZERO_TIME == "0001-01-01T00:00:00Z"


async def test_webhook_posts_alertmanager_document(sink: Sink) -> None:
    integration = WebhookIntegration(
        sink.url("http", "/hooks/sentinel"), external_url="http://sentinel.example:9464", timeout=timedelta(seconds=5)
    )
    firing, resolved = alert("extract_prices"), alert("load_prices", resolved=True)

    await integration.notify(ctx("incident-tool"), [firing, resolved])

    request = sink.received[0]
    assert (request.method, request.path) == ("POST", "/hooks/sentinel")
    assert request.headers["Content-Type"] == "application/json"
    doc = request.json()
    # Alertmanager's field order: template.Data first, then the webhook Message's own fields.
    assert list(doc) == [
        "receiver", "status", "alerts", "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
        "version", "groupKey", "truncatedAlerts",
    ]  # fmt: skip
    assert doc["version"] == "4"
    assert doc["receiver"] == "incident-tool"
    assert doc["status"] == "firing"
    assert doc["groupKey"] == ctx().group_key
    assert doc["truncatedAlerts"] == 0
    assert doc["externalURL"] == "http://sentinel.example:9464"
    assert doc["groupLabels"] == LABELS
    assert doc["commonLabels"] == {**LABELS, "severity": "critical"}
    assert doc["commonAnnotations"] == {"runbook_url": RUNBOOK}
    assert doc["alerts"][0] == {
        "status": "firing",
        "labels": {**LABELS, "severity": "critical", "task": "extract_prices"},
        "annotations": {"runbook_url": RUNBOOK, "summary": "market_data_ingest task extract_prices failed & retried"},
        "startsAt": "2024-05-01T14:30:05.12Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://airflow.internal:8080/dags/market_data_ingest/grid",
        "fingerprint": firing.fingerprint,
    }
    assert doc["alerts"][1]["status"] == "resolved"
    assert doc["alerts"][1]["endsAt"] == "2024-05-01T14:59:00Z"
    # Go writes map keys sorted; so do we, whatever order the alert's labels were given in (byte-comparable).
    for item in doc["alerts"]:
        assert list(item["labels"]) == sorted(item["labels"])
        assert list(item["annotations"]) == ["runbook_url", "summary"]  # given summary first


async def test_webhook_all_resolved_and_firing_end_time_cleared(sink: Sink) -> None:
    integration = WebhookIntegration(sink.url("http", "/h"))
    # An end in the future (relative to the flush) is not a resolution: Alertmanager sends the zero time.
    pending_end = Alert.of(LABELS, starts_at=NOW, ends_at=NOW + timedelta(hours=1))
    await integration.notify(ctx(), [pending_end])
    await integration.notify(ctx(), [alert(resolved=True)])
    first, second = (r.json() for r in sink.received)
    assert first["alerts"][0]["endsAt"] == ZERO_TIME and first["status"] == "firing"
    assert second["status"] == "resolved"
    assert first["alerts"][0]["generatorURL"] == ""


def test_webhook_max_alerts_truncates_and_counts() -> None:
    alerts = [alert("a"), alert("b", pipeline="other"), alert("c", resolved=True, pipeline="other")]
    doc = payload(ctx(), alerts, max_alerts=2)
    assert [a["labels"]["task"] for a in doc["alerts"]] == ["a", "b"]
    assert doc["truncatedAlerts"] == 1
    # Like Alertmanager, the summary fields describe the alerts that are sent.
    assert doc["status"] == "firing"
    assert "pipeline" not in doc["commonLabels"]
    assert payload(ctx(), alerts, max_alerts=0)["truncatedAlerts"] == 0
    assert len(payload(ctx(), alerts, max_alerts=5)["alerts"]) == 3


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (502, True), (429, True), (408, True), (400, False), (403, False), (404, False), (302, False)],
)
async def test_webhook_failures_are_classified(sink: Sink, status: int, retryable: bool) -> None:
    sink.status["/h"] = status
    integration = WebhookIntegration(sink.url("http", "/h"))
    with pytest.raises(DeliveryError) as raised:
        await integration.notify(ctx(), [alert()])
    assert raised.value.retryable is retryable
    assert f"HTTP {status}" in str(raised.value)


async def test_webhook_timeout_is_retryable(sink: Sink) -> None:
    sink.gates["/slow"] = asyncio.Event()  # never answered while the integration waits
    integration = WebhookIntegration(sink.url("http", "/slow"), timeout=timedelta(milliseconds=200))
    with pytest.raises(DeliveryError) as raised:
        await integration.notify(ctx(), [alert()])
    assert raised.value.retryable is True
    assert "no answer within 0.2s" in str(raised.value)


async def test_webhook_connection_refused_is_retryable() -> None:
    integration = WebhookIntegration(f"http://127.0.0.1:{free_port()}/h")
    with pytest.raises(DeliveryError) as raised:
        await integration.notify(ctx(), [alert()])
    assert raised.value.retryable is True


@pytest.mark.parametrize("url", ["ftp://example.com/x", "not a url", "http://", "slack://T/B/C"])
def test_webhook_url_must_be_http(url: str) -> None:
    with pytest.raises(NotifyConfigError, match="http:// or https://"):
        WebhookIntegration(url)


# --- email through a real SMTP server -------------------------------------------------------------------


async def test_apprise_mailto_delivers_to_smtp_with_title_as_subject(smtp: Smtp) -> None:
    url = (
        f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@127.0.0.1:{smtp.port}"
        "?from=sentinel@example.com&to=oncall@example.com&mode=insecure"
    )
    integration = AppriseIntegration.from_url(url)
    assert (integration.name, integration.kind) == ("mailto[0]", "email")
    alerts = [alert("extract_prices"), alert("load_prices", resolved=True)]

    await integration.notify(ctx(), alerts)

    await wait_for(lambda: len(smtp.messages()) == 1)
    message = smtp.messages()[0]
    assert str(make_header(decode_header(message["Subject"]))) == (
        "[FIRING:1] PipelineFailed market_data_ingest (airflow-prod)"
    )
    assert "sentinel@example.com" in message["From"]
    assert "oncall@example.com" in message["To"]
    part = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    text = bytes(part.get_payload(decode=True)).decode()
    assert "market_data_ingest task extract_prices failed & retried" in text
    assert RUNBOOK in text
    assert smtp.logins == [(SMTP_USER.encode(), SMTP_PASSWORD.encode())]


async def test_apprise_mailto_bad_password_fails_without_leaking_it(smtp: Smtp, loguru_lines: list[str]) -> None:
    url = f"mailto://{SMTP_USER}:wrong-Pa55-abc@127.0.0.1:{smtp.port}?from=s@example.com&to=o@example.com&mode=insecure"
    integration = AppriseIntegration.from_url(url)
    with pytest.raises(DeliveryError) as raised:
        await integration.notify(ctx(), [alert()])
    assert smtp.messages() == []
    assert_nowhere(("wrong-Pa55-abc",), str(raised.value), integration.name, repr(integration), *loguru_lines)


# --- Slack and Twilio payloads, intercepted -------------------------------------------------------------


async def test_slack_payload_is_mrkdwn_with_runbook_link(stdlib_debug: pytest.LogCaptureFixture) -> None:
    integration = AppriseIntegration.from_url(SLACK_URL)
    assert (integration.name, integration.kind) == ("slack[0]", "slack")
    alerts = [alert("extract_prices"), alert("load_prices", resolved=True)]
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, SLACK_ENDPOINT, body="ok")
        await integration.notify(ctx(), alerts)
        sent = orjson.loads(mock.calls[0].request.body or b"")

    attachment = sent["attachments"][0]
    assert sent["mrkdwn"] is True
    assert attachment["title"] == "[FIRING:1] PipelineFailed market_data_ingest (airflow-prod)"
    text = attachment["text"]
    assert f"<{RUNBOOK}>" in text  # a live link, not an escaped &lt;…&gt;
    assert "<http://airflow.internal:8080/dags/market_data_ingest/grid|Open run>" in text
    assert "• *market_data_ingest task extract_prices failed &amp; retried*" in text  # mrkdwn kept, & escaped
    assert "*Firing*" in text and "*Resolved*" in text  # not re-read as CommonMark (*x* -> _x_)
    assert_nowhere(SLACK_TOKENS, integration.name, repr(integration), stdlib_debug.text)


@pytest.mark.parametrize(("status", "retryable"), [(404, False), (403, False), (429, True), (500, True)])
async def test_slack_errors_are_classified(status: int, retryable: bool, loguru_lines: list[str]) -> None:
    integration = AppriseIntegration.from_url(SLACK_URL)
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, SLACK_ENDPOINT, body="no_service", status=status)
        with pytest.raises(DeliveryError) as raised:
            await integration.notify(ctx(), [alert()])
    assert raised.value.retryable is retryable
    assert_nowhere(SLACK_TOKENS, str(raised.value), *loguru_lines)


async def test_native_slack_webhook_url_is_a_slack_integration() -> None:
    integration = AppriseIntegration.from_url(SLACK_ENDPOINT)
    assert (integration.name, integration.kind) == ("slack[0]", "slack")


async def test_twilio_sms_body_is_one_line_within_160() -> None:
    integration = AppriseIntegration.from_url(TWILIO_URL)
    assert (integration.name, integration.kind) == ("twilio[0]", "sms")
    long_pipeline = "market_data_ingest_" + "very_long_segment_" * 6
    alerts = [
        alert("extract_prices_from_the_primary_vendor", pipeline=long_pipeline),
        alert("load", pipeline=long_pipeline),
    ]
    with responses.RequestsMock() as mock:
        mock.add(
            responses.POST, re.compile(r"https://api\.twilio\.com/2010-04-01/Accounts/.+/Messages\.json"), status=201
        )
        await integration.notify(ctx("oncall-sms"), alerts)
        form = parse_qs(str(mock.calls[0].request.body))

    body = form["Body"][0]
    assert len(body) <= 160
    assert "\n" not in body and "\r" not in body
    assert body.startswith("[FIRING:2] PipelineFailed market_data_ingest_very_long")
    assert (form["From"], form["To"]) == (["+15551234567"], ["+15557654321"])


async def test_twilio_bad_credentials_are_permanent() -> None:
    integration = AppriseIntegration.from_url(TWILIO_URL)
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, re.compile(r"https://api\.twilio\.com/.*"), status=401, json={"code": 20003})
        with pytest.raises(DeliveryError) as raised:
            await integration.notify(ctx(), [alert()])
    assert raised.value.retryable is False
    assert_nowhere((TWILIO_TOKEN, TWILIO_SID), str(raised.value))


# --- secrets ----------------------------------------------------------------------------------------------


async def test_secret_json_url_never_appears_in_name_error_or_logs(
    sink: Sink, loguru_lines: list[str], stdlib_debug: pytest.LogCaptureFixture
) -> None:
    secrets = ("Hook-Pa55word-1", "s3cretPathToken9", "QuerySecret77x")
    sink.status["/hooks/s3cretPathToken9"] = 500
    url = sink.url("json", "/hooks/s3cretPathToken9?-sig=QuerySecret77x", userinfo="hookuser:Hook-Pa55word-1@")
    integration = AppriseIntegration.from_url(SecretStr(url))
    with pytest.raises(DeliveryError) as raised:
        await integration.notify(ctx(), [alert()])
    assert raised.value.retryable is True
    assert sink.received[0].query == {"sig": "QuerySecret77x"}  # the secret did reach the server
    assert_nowhere(
        secrets,
        integration.name,
        repr(integration),
        str(raised.value),
        repr(raised.value),
        *loguru_lines,
        stdlib_debug.text,
    )


async def test_secret_webhook_path_stays_out_of_errors_and_logs(
    sink: Sink, loguru_lines: list[str], stdlib_debug: pytest.LogCaptureFixture
) -> None:
    sink.status["/hooks/wh-Secret-Path-42"] = 503
    integration = WebhookIntegration(SecretStr(sink.url("http", "/hooks/wh-Secret-Path-42")))
    with pytest.raises(DeliveryError) as raised:
        await integration.notify(ctx(), [alert()])
    assert_nowhere(("wh-Secret-Path-42",), integration.name, str(raised.value), *loguru_lines, stdlib_debug.text)


@pytest.mark.parametrize(
    ("url", "secret", "scheme"),
    [
        ("slack://OnlyOneSecretToken", "OnlyOneSecretToken", "slack"),
        ("nosuchscheme://user:Unknown-Secret-5@host/p", "Unknown-Secret-5", "nosuchscheme"),
        ("twilio://ACnotavalidsid:Tw1l1o-Secret-Token@+1555/+1666", "Tw1l1o-Secret-Token", "twilio"),
        ("justsomesecretstring", "justsomesecretstring", ""),
    ],
)
def test_invalid_apprise_url_is_a_config_error_without_the_secret(
    url: str, secret: str, scheme: str, loguru_lines: list[str], stdlib_debug: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(NotifyConfigError) as raised:
        load_apprise_url(SecretStr(url), where="receiver 'oncall' urls[0]")
    message = str(raised.value)
    assert message.startswith("receiver 'oncall' urls[0]: ")
    if scheme:
        assert f"{scheme}://" in message
    assert "***" in message  # the redacted shape of what was configured
    assert isinstance(raised.value, ValueError)
    assert_nowhere((secret,), message, *loguru_lines, stdlib_debug.text)


def test_redacted_url_keeps_the_shape_and_no_value() -> None:
    assert redact_url("twilio://ACsid:tok@+15551234567/+15557654321") == "twilio://***:***@***/***"
    assert redact_url("json://u:p@host:8080/a/b?x=1&y=2") == "json://***:***@***/***/***?x=***&y=***"
    assert redact_url("https://oncall.example.com:8443/hooks/k?t=1", keep_host=True) == (
        "https://oncall.example.com:8443/***/***?t=***"
    )
    assert redact_url("no scheme at all") == "***"


def test_scrubbing_masks_whole_fragments_not_words_containing_them() -> None:
    register_secret_url("json://127.0.0.1:9/fail/Zz-Whole-Token-1", public_host="127.0.0.1")
    assert scrub("POST /fail/Zz-Whole-Token-1 failed") == "POST /***/*** failed"
    assert scrub("http://127.0.0.1:9/x") == "http://127.0.0.1:9/x"  # an address, not a secret


def test_apprise_warnings_at_load_are_logged_without_secrets(loguru_lines: list[str]) -> None:
    url = "mailto://me:Load-Warn-Pa55@127.0.0.1:2525?from=me@example.com&to=not-an-address-Xy9&mode=insecure"
    target = load_apprise_url(SecretStr(url), where="receiver 'mail' urls[0]")
    assert target.kind == "email"
    warnings = [line for line in loguru_lines if line.startswith("WARNING")]
    assert len(warnings) == 1
    assert "receiver 'mail' urls[0]: apprise accepted the mailto:// URL with warnings" in warnings[0]
    assert_nowhere(("Load-Warn-Pa55", "not-an-address-Xy9"), *loguru_lines)


def test_short_message_services_get_their_own_sms_cap() -> None:
    # Plivo's SMS cap is 140: the one line is cut to that, not to 160.
    integration = AppriseIntegration.from_url("plivo://MAXXXXXXXXXXXXXXXXXX@" + "a" * 40 + "/15551234567/15557654321")
    assert integration.kind == "sms"
    long = [alert("t", pipeline="p" * 300)]
    assert len(integration.render(ctx(), long).body) <= 140


# --- building a receiver's integrations ----------------------------------------------------------------


def test_build_integrations_from_receiver_config(smtp: Smtp) -> None:
    receiver = ReceiverConfig(
        name="everything",
        urls=[
            SecretStr(SLACK_URL),
            SecretStr(TWILIO_URL),
            SecretStr(f"mailto://127.0.0.1:{smtp.port}?from=a@example.com&to=b@example.com&mode=insecure"),
            SecretStr("json://127.0.0.1:9/a"),
            SecretStr("json://127.0.0.1:9/b"),
            SecretStr("discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js"),
        ],
        webhook=WebhookConfig(url=SecretStr("https://oncall.example.com/hooks/x"), send_resolved=False, max_alerts=5),
        send_resolved=True,
        console=True,
    )
    built = build_integrations(receiver)
    assert [(i.name, i.kind, i.send_resolved) for i in built] == [
        ("slack[0]", "slack", True),
        ("twilio[0]", "sms", True),
        ("mailto[0]", "email", True),
        ("json[0]", "webhook", True),
        ("json[1]", "webhook", True),
        ("discord[0]", "generic", True),
        ("webhook[0]", "webhook", False),
        ("console[0]", "console", True),
    ]
    assert len({i.name for i in built}) == len(built)


def test_build_integrations_reports_every_bad_url_redacted() -> None:
    receiver = ReceiverConfig(
        name="oncall",
        urls=[
            SecretStr("json://127.0.0.1:9/ok"),
            SecretStr("slack://Bad-Token-One"),
            SecretStr("zzz://Bad-Token-Two@h"),
        ],
        webhook=WebhookConfig(url=SecretStr("ftp://Bad-Token-Three@example.com/x")),
    )
    with pytest.raises(NotifyConfigError) as raised:
        build_integrations(receiver)
    message = str(raised.value)
    assert "receiver 'oncall' urls[1]" in message
    assert "receiver 'oncall' urls[2]" in message
    assert "receiver 'oncall' webhook" in message
    assert "urls[0]" not in message
    assert_nowhere(("Bad-Token-One", "Bad-Token-Two", "Bad-Token-Three"), message)


def test_receiver_without_integrations_builds_nothing() -> None:
    assert build_integrations(ReceiverConfig(name="blackhole")) == []


def test_webhook_timeout_and_max_alerts_come_from_config(sink: Sink) -> None:
    receiver = ReceiverConfig(
        name="incident-tool",
        webhook=WebhookConfig(url=SecretStr(sink.url("http", "/h")), max_alerts=1, timeout=timedelta(seconds=3)),
    )
    [hook] = build_integrations(receiver, external_url="http://sentinel.example")
    assert isinstance(hook, WebhookIntegration)
    doc = hook.payload(ctx(), [alert("a"), alert("b")])
    assert doc["truncatedAlerts"] == 1
    assert doc["externalURL"] == "http://sentinel.example"


# --- console --------------------------------------------------------------------------------------------


async def test_console_prints_title_and_body() -> None:
    stream = io.StringIO()
    console = ConsoleIntegration(stream=stream)
    await console.notify(ctx(), [alert()])
    out = stream.getvalue()
    assert "data-slack" in out and "2024-05-01 15:00:00 UTC" in out
    assert "[FIRING:1] PipelineFailed market_data_ingest (airflow-prod)\n" in out
    assert "market_data_ingest task extract_prices failed & retried" in out
    assert RUNBOOK in out


async def test_console_defaults_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    await ConsoleIntegration().notify(ctx(), [alert(resolved=True)])
    assert "[RESOLVED] PipelineFailed" in capsys.readouterr().out


# --- tiered fallback (`fallback: [tags…]`): tier by tier, each tier to all of its URLs ------------------

TIER_T0 = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)

TIERS_CONFIG = """\
receivers:
  - name: oncall
    fallback: [primary, backup]
    urls:
      - {{url: "{p1}", tag: primary}}
      - {{url: "{b}", tag: backup}}
      - {{url: "{p2}", tag: primary}}
route: {{receiver: oncall, group_by: [alertname], group_wait: 30s, group_interval: 5m}}
"""


def _dispatcher(tmp_path: Path, sink: Sink, clock: FrozenClock) -> tuple[Dispatcher, NotificationLog]:
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(
        TIERS_CONFIG.format(p1=sink.url("json", "/p1"), p2=sink.url("json", "/p2"), b=sink.url("json", "/backup"))
    )
    config = load_config(cfg).config
    nflog = NotificationLog()
    pipelines = build_pipelines(
        {r.name: build_integrations(r) for r in config.receivers}, nflog, options=delivery_options(config)
    )
    return Dispatcher(Route.build(config.route), pipelines, clock, nflog=nflog), nflog


def _paths(sink: Sink) -> list[str]:
    return sorted(r.path for r in sink.received)


async def test_a_tier_delivers_when_one_of_its_urls_does_and_the_next_tier_is_not_asked(
    tmp_path: Path, sink: Sink
) -> None:
    clock = FrozenClock(TIER_T0)
    d, _ = _dispatcher(tmp_path, sink, clock)
    sink.status["/p1"] = 401  # one primary URL is broken for good; the other works
    d.put([Alert.of({"alertname": "PricesLate", "severity": "critical"}, starts_at=TIER_T0)])
    clock.set(TIER_T0 + timedelta(seconds=30))
    await d.flush_due()
    assert _paths(sink) == ["/p1", "/p2"]  # both primaries asked at once, the backup never
    assert "PricesLate" in sink.received[-1].body.decode()


async def test_a_failed_tier_falls_back_to_the_next_and_the_log_keeps_it_from_repeating(
    tmp_path: Path, sink: Sink
) -> None:
    clock = FrozenClock(TIER_T0)
    d, nflog = _dispatcher(tmp_path, sink, clock)
    sink.status["/p1"] = sink.status["/p2"] = 403  # the whole primary tier refuses (permanent: no retries)
    d.put([Alert.of({"alertname": "PricesLate"}, starts_at=TIER_T0)])
    clock.set(TIER_T0 + timedelta(seconds=30))
    await d.flush_due()
    assert _paths(sink) == ["/backup", "/p1", "/p2"]
    # one branch, logged as delivered once
    assert [split_key(k)[:2] for k in nflog.entries] == [("oncall", "fallback")]
    # The next group_interval has nothing new: nobody is asked again.
    clock.set(TIER_T0 + timedelta(minutes=6))
    await d.flush_due()
    assert len(sink.received) == 3


@pytest.mark.parametrize(
    ("receiver", "where", "message"),
    [
        (
            "{name: r, fallback: [primary], urls: [{url: 'json://h/a', tag: primary}, 'json://h/b']}",
            "2:78",
            "receiver 'r': urls[1] is in no fallback tier; give it a tag from primary",
        ),
        (
            "{name: r, fallback: [primary, backup], urls: [{url: 'json://h/a', tag: primary}]}",
            "2:25",
            "receiver 'r': fallback tier 'backup' tags none of its urls",
        ),
        (
            "{name: r, fallback: [a], urls: [{url: 'json://h/a', tag: a}], console: true}",
            "2:76",
            "receiver 'r': a receiver with fallback tiers sends only to tagged urls; console has no tier",
        ),
        (
            "{name: r, fallback: [a], urls: [{url: 'json://h/a', tag: a, priority: 1}]}",
            "2:65",
            "unknown key 'priority'",
        ),
    ],
)
def test_tier_mistakes_are_reported_where_they_are(tmp_path: Path, receiver: str, where: str, message: str) -> None:
    cfg = tmp_path / "sentinel.yaml"
    cfg.write_text(f"receivers:\n  - {receiver}\nroute: {{receiver: r}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    text = str(err.value)
    assert f"{cfg}:{where}:" in text and message in text, text
