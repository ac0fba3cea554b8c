"""Webhook bodies are bounded: over 64 KiB is refused (413) without reading it all, whether the
size is declared (Content-Length) or not (chunked); an unsigned request is refused unread."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlencode

from dialgraph.telephony.simulator.webhooks import call_params, new_call_sid
from tests.twilio.conftest import SUPPORT_NUMBER, TwilioApp

MAX_WEBHOOK_BODY = 64 * 1024  # the documented limit (server.security.MAX_WEBHOOK_BODY)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def big_params() -> dict[str, str]:
    params = call_params(new_call_sid(), status="ringing", to_number=SUPPORT_NUMBER)
    params["Padding"] = "x" * (MAX_WEBHOOK_BODY + 1024)
    return params


class Body:
    """A chunked request body that counts what the server pulled from it."""

    def __init__(self, data: bytes, chunk: int = 4096) -> None:
        self.data, self.chunk, self.sent = data, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < len(self.data):
            piece = self.data[self.sent : self.sent + self.chunk]
            self.sent += len(piece)
            yield piece


async def test_correctly_signed_but_oversized_body_is_refused(tw: TwilioApp) -> None:
    response = await tw.twilio.post("/twilio/voice", big_params())  # declares its Content-Length
    assert response.status_code == 413


async def test_oversized_chunked_body_is_refused_without_reading_it_all(tw: TwilioApp) -> None:
    params = big_params()
    params["Padding"] *= 8  # ~0.5 MB
    data = urlencode(params).encode()
    body = Body(data)
    signature = tw.twilio.sign(tw.twilio.url("/twilio/voice"), params)
    response = await tw.http.post("/twilio/voice", content=body, headers={**FORM, "X-Twilio-Signature": signature})
    assert response.status_code == 413
    assert body.sent <= MAX_WEBHOOK_BODY + 2 * body.chunk < len(data)


async def test_small_chunked_body_still_works(tw: TwilioApp) -> None:
    params = call_params(new_call_sid(), status="ringing", to_number=SUPPORT_NUMBER)
    body = Body(urlencode(params).encode(), chunk=50)
    signature = tw.twilio.sign(tw.twilio.url("/twilio/voice"), params)
    response = await tw.http.post("/twilio/voice", content=body, headers={**FORM, "X-Twilio-Signature": signature})
    assert response.status_code == 200, response.text
    assert "<Connect" in response.text


async def test_unsigned_request_is_refused_before_its_body_is_read(tw: TwilioApp) -> None:
    data = urlencode(call_params(new_call_sid())).encode()
    body = Body(data, chunk=16)
    response = await tw.http.post("/twilio/voice", content=body, headers=FORM)
    assert response.status_code == 403
    assert body.sent <= body.chunk  # the transport may prefetch one chunk, no more
