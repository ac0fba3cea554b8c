"""The Deepgram socket we open ourselves: no permessage-deflate, otherwise the SDK's request.

A bare ``websockets`` server on 127.0.0.1 records each opening handshake; the SDK's own
``listen.v1.connect`` against the same server is the reference for URL, query and headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import pytest
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v1.types import ListenV1Results
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from dialgraph.telephony.speech.deepgram import DeepgramRecognizer

RESULTS = (
    '{"type":"Results","channel_index":[0,1],"duration":0.5,"start":0.0,"is_final":true,'
    '"speech_final":true,"channel":{"alternatives":[{"transcript":"hello","confidence":0.9,"words":[]}]},'
    '"metadata":{"request_id":"r","model_info":{"name":"n","version":"v","arch":"a"},"model_uuid":"u"}}'
)


@dataclass
class Handshakes:
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    received: list[str | bytes] = field(default_factory=list)
    status: int = 101


@asynccontextmanager
async def handshake_server() -> AsyncIterator[Handshakes]:
    seen = Handshakes()

    def record(connection: ServerConnection, request: Request) -> Response | None:
        seen.requests.append(request)
        if seen.status != 101:
            return Response(seen.status, "Rejected", Headers(), b"no")
        return None

    async def handler(ws: ServerConnection) -> None:
        await ws.send(RESULTS)
        async for message in ws:
            seen.received.append(message)

    async with serve(handler, "127.0.0.1", 0, process_request=record) as server:
        port = server.sockets[0].getsockname()[1]
        seen.url = f"ws://127.0.0.1:{port}"
        yield seen


def _query(request: Request) -> tuple[str, dict[str, list[str]]]:
    url = urlsplit(request.path)
    return url.path, {k: sorted(v) for k, v in parse_qs(url.query).items()}


async def test_recognizer_socket_offers_no_compression_and_parses_events() -> None:
    async with handshake_server() as seen:
        rec = DeepgramRecognizer("dg-test-key", url=seen.url)
        async with rec.connect("multi", ["cleaning", "Dr. Rao"]) as socket:
            first = await anext(aiter(socket))
            await socket.send_media(b"\xff" * 160)
            await socket.send_keep_alive()
    (request,) = seen.requests
    assert "Sec-WebSocket-Extensions" not in request.headers
    assert request.headers["Authorization"] == "Token dg-test-key"
    assert isinstance(first, ListenV1Results) and first.channel.alternatives[0].transcript == "hello"
    assert seen.received[0] == b"\xff" * 160 and '"KeepAlive"' in str(seen.received[1])


async def test_recognizer_request_is_the_sdks_but_for_compression() -> None:
    async with handshake_server() as seen:
        rec = DeepgramRecognizer("dg-test-key", url=seen.url, model="nova-3", endpointing_ms=250)
        async with rec.connect("hi", ["cleaning", "Dr. Rao"]):
            pass
        env = DeepgramClientEnvironment(base=seen.url, production=seen.url, agent=seen.url, agent_rest=seen.url)
        sdk = AsyncDeepgramClient(api_key="dg-test-key", environment=env)
        async with sdk.listen.v1.connect(language="hi", keyterm=["cleaning", "Dr. Rao"], **rec.options):
            pass
    ours, theirs = seen.requests
    assert _query(ours) == _query(theirs)
    assert _query(ours)[1]["keyterm"] == ["Dr. Rao", "cleaning"] and _query(ours)[1]["language"] == ["hi"]
    # The SDK's socket offers permessage-deflate (the reason ours exists); ours offers nothing.
    assert "permessage-deflate" in theirs.headers["Sec-WebSocket-Extensions"]
    assert "Sec-WebSocket-Extensions" not in ours.headers
    varying = {"sec-websocket-key", "sec-websocket-extensions", "x-deepgram-session-id"}

    def same(r: Request) -> list[tuple[str, str]]:
        return sorted((k.lower(), v) for k, v in r.headers.raw_items() if k.lower() not in varying)

    assert same(ours) == same(theirs)


async def test_refused_handshake_is_the_sdks_api_error() -> None:
    async with handshake_server() as seen:
        seen.status = 401
        rec = DeepgramRecognizer("dg-wrong-key", url=seen.url)
        with pytest.raises(ApiError) as info:
            async with rec.connect("en"):
                pass
    assert info.value.status_code == 401
