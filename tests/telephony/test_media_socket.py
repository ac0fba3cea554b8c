"""The media socket on picows (server/routes/media_socket.py), as ``dialgraph serve`` runs
it: the real app under uvicorn with the product's options, a real websockets client.

Every call test in this folder goes through it (the harness serves with
``server.cli.uvicorn_options``); these cover what only this socket does: joining a
fragmented message, refusing an oversized one, and handing other paths to uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from dialgraph.server.core.settings import Settings
from dialgraph.server.routes.media_socket import MAX_MESSAGE
from dialgraph.telephony.audio import SILENCE_FRAME
from dialgraph.telephony.simulator.scripted import ScriptedRecognizer, ScriptedRunner, ScriptedSynthesizer
from tests.telephony.harness import LOUD_FRAME, LiveCall, TwilioMediaClient, connected_call, new_call, new_sids, serve
from tests.telephony.test_call_session import GREETING, overrides, play_out, sqlite_settings  # noqa: F401
from tests.telephony.test_preemptive_session import until


@asynccontextmanager
async def greeted(settings: Settings, recognizer: ScriptedRecognizer) -> AsyncIterator[LiveCall]:
    """A call on the media socket, its greeting played out."""
    synth, runner = ScriptedSynthesizer(), ScriptedRunner(greeting=GREETING)
    async with connected_call(settings, overrides(recognizer, synth, runner)) as call:
        await play_out(call.client, 0, synth, generation=1)
        yield call


async def test_a_frame_sent_in_fragments_reaches_the_call_whole(sqlite_settings: Settings) -> None:  # noqa: F811
    recognizer = ScriptedRecognizer()
    async with greeted(sqlite_settings, recognizer) as (_, client):
        heard = recognizer.streams[0].audio
        before = len(heard)
        text = client.media_message(LOUD_FRAME)
        await client.ws.send([text[:40], text[40:200], text[200:]])  # one message, three frames
        await client.media(SILENCE_FRAME)
        await until(lambda: len(heard) >= before + 2 * len(LOUD_FRAME))
        assert bytes(heard[before : before + len(LOUD_FRAME)]) == LOUD_FRAME
        assert client.ws.close_code is None  # the call goes on


async def test_a_message_over_the_limit_closes_that_socket_with_1009(sqlite_settings: Settings) -> None:  # noqa: F811
    async with greeted(sqlite_settings, ScriptedRecognizer()) as (served, client):
        huge = client.media_message(SILENCE_FRAME * (MAX_MESSAGE // len(SILENCE_FRAME)))
        await client.ws.send([huge[: MAX_MESSAGE // 2], huge[MAX_MESSAGE // 2 :]])
        assert await client.drain_until_closed() == 1009
        await served.session_done(client.call_sid)


async def test_another_path_is_uvicorns_own_websocket(sqlite_settings: Settings) -> None:  # noqa: F811
    recognizer = ScriptedRecognizer()
    runner = ScriptedRunner(greeting=GREETING)
    async with serve(sqlite_settings, overrides(recognizer, ScriptedSynthesizer(), runner)) as served:
        other = served.url.replace("/twilio/media", "/twilio/elsewhere")
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(other):
                pass
        # Starlette's answer for no such WebSocket route (picows would have said 404)
        assert info.value.response.status_code == 403
    assert recognizer.streams == []


async def test_frames_queued_before_the_session_takes_over_arrive_in_order(sqlite_settings: Settings) -> None:  # noqa: F811
    # connected, start and 30 frames in one burst: the frames that come while the handshake
    # is checked wait in the socket's queue, the rest go straight to the session's callback
    recognizer = ScriptedRecognizer()
    frames = [bytes([0x10 + k]) * len(SILENCE_FRAME) for k in range(30)]
    sent = b"".join(frames)
    call_sid, stream_sid = new_sids()
    async with serve(sqlite_settings, overrides(recognizer, ScriptedSynthesizer(), ScriptedRunner())) as served:
        token = await new_call(sqlite_settings, served.app, call_sid=call_sid)
        async with TwilioMediaClient.connect(
            served.url, sqlite_settings, call_sid=call_sid, stream_sid=stream_sid
        ) as client:
            for message in [client.protocol.connected(), client.protocol.start({"token": token})] + [
                client.media_message(frame) for frame in frames
            ]:
                await client.ws.send(message)  # written at once: no round trip in between
            await until(lambda: bool(recognizer.streams) and len(recognizer.streams[0].audio) >= len(sent))
            assert bytes(recognizer.streams[0].audio[: len(sent)]) == sent
            await client.stop()
            session = await served.session_done(call_sid)
    assert session.state.end_reason == "stop"


async def test_a_peer_that_vanishes_ends_its_call_as_socket_closed(sqlite_settings: Settings) -> None:  # noqa: F811
    async with greeted(sqlite_settings, ScriptedRecognizer()) as (served, client):
        client.ws.transport.abort()  # no close frame, no stop: the TCP connection is just gone
        session = await served.session_done(client.call_sid)
    assert session.state.end_reason == "socket closed"
