"""Keeping notification URLs out of names, errors and logs.

Apprise and webhook URLs carry credentials in every part: Slack's tokens are the "host" and path, Twilio's
auth token is the password, a webhook's secret is often a path segment or a query value. Apprise's own
"privacy" rendering is not enough (it prints json:// paths and query values in clear), and apprise logs a
URL it cannot parse verbatim at ERROR. So every URL we load registers its fragments here, and one logging
filter scrubs them from the loggers that see them (apprise's, and urllib3's request lines).
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import parse_qsl, quote, unquote, urlsplit

MASK = "***"

# Shorter fragments are not credentials (ports, "api", "v1") and masking them would garble every message.
_MIN_FRAGMENT = 4

# The loggers whose records can carry a URL or a part of one.
_SCRUBBED_LOGGERS = ("apprise", "urllib3.connectionpool", "urllib3.util.retry", "httpx", "httpcore")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def url_scheme(url: str) -> str:
    """The scheme of `url` in lower case, or "" when it has none (never any other part of the URL)."""
    m = _SCHEME.match(url.strip())
    return m.group(1).lower() if m else ""


def redact_url(url: str, *, keep_host: bool = False) -> str:
    """A shape-preserving, secret-free rendering for error messages: `twilio://***:***@***/***`.

    Query parameter names stay (they say what was configured); every value is masked. The host is kept
    only when asked: it is a token for many apprise schemes (slack://TOKEN_A/TOKEN_B/TOKEN_C).
    """
    scheme = url_scheme(url)
    if not scheme:
        return MASK
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return f"{scheme}://{MASK}"
    out = f"{scheme}://"
    if parts.username is not None:
        out += MASK + (f":{MASK}" if parts.password is not None else "") + "@"
    if host:
        out += host if keep_host else MASK
        if keep_host and port is not None:
            out += f":{port}"
    segments = [s for s in parts.path.split("/") if s]
    if segments:
        out += "/" + "/".join(MASK for _ in segments)
    if parts.query:
        names = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True)]
        out += "?" + "&".join(f"{k}={MASK}" for k in names)
    if parts.fragment:
        out += "#" + MASK
    return out


def url_fragments(url: str, *, public_host: str | None = None) -> set[str]:
    """Every part of `url` that may be a credential, in the spellings a log line may show it in.

    `public_host` is the host as the integration itself prints it (apprise's privacy URL); a host that
    reads the same there is an address, not a token, and is left readable.
    """
    raw = url.strip()
    found: set[str] = {raw}
    body = _SCHEME.sub("", raw, count=1)
    try:
        parts = urlsplit(raw)
        pieces = [p for p in (parts.username, parts.password) if p]
        host = parts.hostname or ""
        if host and host != (public_host or "").lower():
            pieces.append(host)
            # Apprise keeps the case of a token-as-host; urlsplit lower-cases it.
            pieces.extend(p for p in re.split(r"[@/:?#]", body) if p.lower() == host)
        pieces.extend(s for s in parts.path.split("/") if s)
        pieces.extend(v for _, v in parse_qsl(parts.query, keep_blank_values=True))
        if parts.fragment:
            pieces.append(parts.fragment)
    except ValueError:
        # An unparseable URL: fall back to every run of characters between delimiters.
        pieces = re.split(r"[/:@?&=#]+", body)
    for piece in pieces:
        for form in (piece, unquote(piece), quote(unquote(piece), safe="")):
            if len(form) >= _MIN_FRAGMENT:
                found.add(form)
    return found


class SecretScrubber(logging.Filter):
    """A logging filter that masks every registered secret fragment in a record's final message."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._fragments: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def register(self, fragments: set[str]) -> None:
        with self._lock:
            if fragments <= self._fragments:
                return
            self._fragments |= fragments
            self._compile()

    def forget(self, fragments: set[str]) -> None:
        """Stop masking fragments registered provisionally (a host that turned out to be an address)."""
        with self._lock:
            if not fragments & self._fragments:
                return
            self._fragments -= fragments
            self._compile()

    def _compile(self) -> None:
        # Longest first, so a token is masked whole rather than around a shorter fragment inside it; and
        # only where it stands alone, so a path segment "fail" leaves the word "failed" readable.
        ordered = sorted(self._fragments, key=len, reverse=True)
        alternatives = "|".join(re.escape(f) for f in ordered)
        self._pattern = re.compile(f"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])") if ordered else None

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern is not None and text else text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._pattern is None:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the emitter's bug; do not make it ours
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg = self.scrub(message)
        record.args = ()
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        record.exc_info = None
        return True


_scrubber = SecretScrubber()
_installed = False
_install_lock = threading.Lock()


def scrubber() -> SecretScrubber:
    """The process-wide scrubber, attached to the URL-bearing loggers on first use."""
    global _installed
    if not _installed:
        with _install_lock:
            if not _installed:
                for name in _SCRUBBED_LOGGERS:
                    logging.getLogger(name).addFilter(_scrubber)
                # Without a handler of its own, apprise's warnings reach Python's last-resort stderr
                # printer whenever the application has not configured logging; Sentinel reports delivery
                # failures itself, through loguru.
                apprise_logger = logging.getLogger("apprise")
                if not any(isinstance(h, logging.NullHandler) for h in apprise_logger.handlers):
                    apprise_logger.addHandler(logging.NullHandler())
                _installed = True
    return _scrubber


def register_secret_url(url: str, *, public_host: str | None = None) -> None:
    scrubber().register(url_fragments(url, public_host=public_host))


def scrub(text: str) -> str:
    """Mask every registered secret fragment in `text` (for messages we build from third-party text)."""
    return scrubber().scrub(text)
