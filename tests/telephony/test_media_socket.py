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
from tests.telephony.harness import LOUD_FRAME, LiveCall, connected_call, serve
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
