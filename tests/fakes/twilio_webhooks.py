"""Test helper: send webhooks the way Twilio does, signed with twilio-python's own
``RequestValidator`` (so our validator is checked against the SDK, not against itself)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from urllib.parse import urlencode

import httpx
from twilio.request_validator import RequestValidator


def new_call_sid() -> str:
    return "CA" + uuid.uuid4().hex


def call_params(
    sid: str,
    *,
    from_number: str = "+14155550100",
    to_number: str = "+15550009999",
    status: str = "in-progress",
    direction: str = "inbound",
    account_sid: str = "AC" + "1" * 32,
    **extra: str,
) -> dict[str, str]:
    """The standard parameters Twilio sends with every voice webhook."""
    return {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": sid,
        "CallStatus": status,
        "Called": to_number,
        "Caller": from_number,
        "Direction": direction,
        "From": from_number,
        "To": to_number,
        **extra,
    }


class TwilioWebhookClient:
    """Posts form webhooks to the app with a correct (or deliberately wrong) signature."""

    def __init__(self, http: httpx.AsyncClient, *, public_url: str, auth_token: str) -> None:
        self.http = http
        self.public_url = public_url.rstrip("/")
        self.validator = RequestValidator(auth_token)

    def url(self, path: str, query: Mapping[str, str] | None = None) -> str:
        return self.public_url + path + (f"?{urlencode(query)}" if query else "")

    def sign(self, url: str, params: Mapping[str, str]) -> str:
        signature: str = self.validator.compute_signature(url, dict(params))
        return signature

    async def post(
        self,
        path: str,
        params: Mapping[str, str],
        *,
        query: Mapping[str, str] | None = None,
        signature: str | None = None,
        signed_url: str | None = None,
        unsigned: bool = False,
    ) -> httpx.Response:
        """POST like Twilio. ``signed_url`` signs a different URL than the one requested
        (replay); ``signature`` sends a given header; ``unsigned`` sends none."""
        headers = {}
        if not unsigned:
            headers["X-Twilio-Signature"] = signature or self.sign(signed_url or self.url(path, query), params)
        target = path + (f"?{urlencode(query)}" if query else "")
        return await self.http.post(
            target,
            content=urlencode(dict(params)),
            headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
        )

    async def get(self, path: str, query: Mapping[str, str], *, unsigned: bool = False) -> httpx.Response:
        """GET like Twilio: the parameters are in the signed URL, nothing else is."""
        headers = {} if unsigned else {"X-Twilio-Signature": self.sign(self.url(path, query), {})}
        return await self.http.get(path + "?" + urlencode(dict(query)), headers=headers)
