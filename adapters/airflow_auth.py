"""Credentials for Airflow's REST API: a JWT from `POST /auth/token` (Airflow 3) or basic auth (Airflow 2).

Secrets only ever go into request headers: never into log lines, exception messages or SourceHealth.
"""

from __future__ import annotations

import base64
from datetime import timedelta

import orjson
from loguru import logger
from pydantic import ValidationError

from adapters.airflow_schema import TokenResponse
from adapters.http import PoliteClient, SourceError
from sentinel.model import Clock, SourceSpec

FALLBACK_VALIDITY = timedelta(hours=1)  # when the token's exp cannot be read


def jwt_validity(token: str) -> timedelta | None:
    """How long the token is valid for, from its own iat/exp claims (read, not verified: it is not ours)."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = float(claims["exp"])
        iat = float(claims.get("iat") or claims.get("nbf"))
    except (IndexError, KeyError, TypeError, ValueError, orjson.JSONDecodeError):
        return None
    return timedelta(seconds=exp - iat) if exp > iat else None


class AirflowAuth:
    def __init__(self, spec: SourceSpec, clock: Clock, client: PoliteClient) -> None:
        self._spec = spec
        self._clock = clock
        self._client = client
        self._token: str | None = None
        self._renew_at = 0.0  # clock.monotonic() after which the token is renewed before use
        self.token_requests = 0

    @property
    def has_credentials(self) -> bool:
        return bool(self._spec.username) and self._spec.password is not None

    def invalidate(self) -> None:
        self._token = None

    async def headers(self, api: str) -> dict[str, str]:
        if not self.has_credentials:
            return {}
        if api == "airflow-v1":
            return {"Authorization": "Basic " + self._basic()}
        if self._token is None or self._clock.monotonic() >= self._renew_at:
            await self._fetch_token()
        return {"Authorization": f"Bearer {self._token}"}

    def _basic(self) -> str:
        assert self._spec.password is not None
        raw = f"{self._spec.username}:{self._spec.password.get_secret_value()}".encode()
        return base64.b64encode(raw).decode("ascii")

    async def _fetch_token(self) -> None:
        assert self._spec.password is not None
        self._token = None
        self.token_requests += 1
        resp = await self._client.request(
            "POST",
            "/auth/token",
            json={"username": self._spec.username, "password": self._spec.password.get_secret_value()},
        )
        if resp.status_code in (401, 403):
            raise SourceError("auth", f"POST /auth/token: credentials rejected (HTTP {resp.status_code})")
        if resp.status_code >= 400:
            raise SourceError("http_4xx", f"POST /auth/token: HTTP {resp.status_code}", resp.status_code)
        try:
            token = TokenResponse.model_validate(self._client.json(resp)).access_token
        except ValidationError as exc:
            self._client.report("invalid_payload")
            raise SourceError("invalid_payload", "POST /auth/token: no access_token in response") from exc
        validity = jwt_validity(token) or FALLBACK_VALIDITY
        # Renew well before expiry so a long poll cycle never starts with a token about to lapse.
        margin = min(validity * 0.1, timedelta(minutes=5))
        self._renew_at = self._clock.monotonic() + (validity - margin).total_seconds()
        self._token = token
        logger.debug("airflow source {}: new API token, valid {}", self._spec.name, validity)
