"""A stream token opens one media socket: a replay (whoever captured the token and the fixed
handshake signature) is refused like a forged token while the real call goes on; two sockets
racing with one token get one winner; with the database unreachable the socket is refused
(fail closed). Real app under uvicorn, real WebSockets, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select
from websockets.exceptions import ConnectionClosed

from dialgraph.server.core.db import Database
from dialgraph.server.core.models import ConsumedStreamToken
from dialgraph.server.core.security import issue_stream_token, verify_stream_token
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.turns import CallerText
from dialgraph.telephony.audio import SILENCE_FRAME
from dialgraph.telephony.simulator.scripted import ScriptedRecognizer, ScriptedRunner, ScriptedSynthesizer
from dialgraph.telephony.speech.base import Final
from tests.telephony.harness import TwilioMediaClient, new_call, new_sids, serve
from tests.telephony.test_call_session import GREETING, overrides, play_out


def scripted() -> tuple[ScriptedRecognizer, ScriptedSynthesizer, ScriptedRunner]:
    recognizer = ScriptedRecognizer([(10, Final("when do you open", 0.0, 0.2, speech_final=True))])
    runner = ScriptedRunner(greeting=GREETING, replies={"when do you open": "We open at nine."})
    return recognizer, ScriptedSynthesizer(), runner


async def first_answer(client: TwilioMediaClient) -> str:
    """``"accepted"`` if the server sends anything on this socket, else ``"closed <code>"``."""
    try:
        await client.until(lambda _: True)
    except ConnectionClosed as exc:
        return f"closed {exc.rcvd.code if exc.rcvd is not None else None}"
    return "accepted"


async def consumed(db: Database) -> list[tuple[str, str]]:
    async with db.sessionmaker() as s:
        rows = await s.scalars(select(ConsumedStreamToken))
        return [(r.jti, r.call_sid) for r in rows]


async def test_a_replayed_token_is_refused_and_the_first_call_goes_on(settings: Settings) -> None:
    recognizer, synth, runner = scripted()
    call_sid, stream_sid = new_sids()
    async with serve(settings, overrides(recognizer, synth, runner)) as served:
        token = await new_call(settings, served.app, call_sid=call_sid)
        async with TwilioMediaClient.connect(served.url, settings, call_sid=call_sid, stream_sid=stream_sid) as client:
            await client.start(token)
            await play_out(client, 0, synth, generation=1)
            first = served.app.state.active_calls[call_sid]

            # The attacker: the same token and handshake signature, a stream of its own.
            async with TwilioMediaClient.connect(
                served.url, settings, call_sid=call_sid, stream_sid=new_sids()[1]
            ) as replay:
                await replay.start(token)
                assert await replay.drain_until_closed() == 1008
                assert replay.received == []
            assert len(recognizer.streams) == 1 and runner.inputs == [("start", None)]
            assert served.app.state.active_calls[call_sid] is first

            # The caller is still connected to the agent: a turn gets its answer.
            await client.media(SILENCE_FRAME, 10)
            await play_out(client, 2, synth, generation=2)
            assert synth.phrases[2:] == ["We open at nine."]
            await client.stop()
            assert await client.drain_until_closed() == 1000
        session = await served.session_done(call_sid)
        rows = await consumed(served.app.state.services.db)
    assert session is first and session.state.end_reason == "stop"
    assert runner.inputs == [("start", None), ("respond", CallerText("when do you open"))]
    assert rows == [(verify_stream_token(settings.stream_token_secret.get_secret_value(), token).jti, call_sid)]


async def test_two_sockets_racing_with_one_token_get_one_winner(settings: Settings) -> None:
    recognizer, synth, runner = scripted()
    call_sid = new_sids()[0]
    async with serve(settings, overrides(recognizer, synth, runner)) as served:
        token = await new_call(settings, served.app, call_sid=call_sid)
        async with (
            TwilioMediaClient.connect(served.url, settings, call_sid=call_sid, stream_sid=new_sids()[1]) as one,
            TwilioMediaClient.connect(served.url, settings, call_sid=call_sid, stream_sid=new_sids()[1]) as two,
        ):
            await asyncio.gather(one.start(token), two.start(token))
            answers = await asyncio.gather(first_answer(one), first_answer(two))
            assert sorted(answers) == ["accepted", "closed 1008"]
            winner = one if answers[0] == "accepted" else two
            await winner.stop()
            assert await winner.drain_until_closed() == 1000
        await served.session_done(call_sid)
        rows = await consumed(served.app.state.services.db)
    assert len(recognizer.streams) == 1 and runner.inputs == [("start", None)]
    assert [sid for _, sid in rows] == [call_sid]


async def test_each_new_stream_of_a_call_comes_with_its_own_token(settings: Settings) -> None:
    """A dropped stream reconnects with the fresh token ``/stream-ended`` hands out; the
    dropped stream's token stays spent."""
    recognizer, synth, runner = scripted()
    call_sid = new_sids()[0]
    async with serve(settings, overrides(recognizer, synth, runner)) as served:
        first = await new_call(settings, served.app, call_sid=call_sid)
        again = await new_call(settings, served.app, call_sid=call_sid, signal="reconnected")
        for token in (first, again):
            async with TwilioMediaClient.connect(
                served.url, settings, call_sid=call_sid, stream_sid=new_sids()[1]
            ) as client:
                await client.start(token)
                await client.until(lambda m: m["event"] == "mark")
                await client.stop()
                assert await client.drain_until_closed() == 1000
            await served.session_done(call_sid)
            served.finished.clear()
            served._events.pop(call_sid)
        async with TwilioMediaClient.connect(served.url, settings, call_sid=call_sid, stream_sid=new_sids()[1]) as late:
            await late.start(first)
            assert await late.drain_until_closed() == 1008
        rows = await consumed(served.app.state.services.db)
    assert [kind for kind, _ in runner.inputs] == ["start", "respond"]  # the greeting, then the reconnection
    assert len(recognizer.streams) == 2
    assert len(rows) == 2 and {sid for _, sid in rows} == {call_sid}


async def test_an_unreachable_database_refuses_the_socket_before_any_provider(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    down = Database("postgresql+psycopg://postgres@127.0.0.1:1/none")
    recognizer, synth, runner = scripted()
    call_sid, stream_sid = new_sids()
    token = issue_stream_token(
        settings.stream_token_secret.get_secret_value(),
        call_sid=call_sid,
        thread_id=call_sid,
        flow="scheduling",
        ttl_s=60,
    )
    try:
        with_down_db = overrides(recognizer, synth, runner)
        with_down_db.db = down
        async with serve(settings, with_down_db) as served:
            async with TwilioMediaClient.connect(
                served.url, settings, call_sid=call_sid, stream_sid=stream_sid
            ) as client:
                await client.start(token)
                assert await client.drain_until_closed() == 1011
                assert client.received == []
            assert served.app.state.active_calls == {}
    finally:
        await down.aclose()
    assert recognizer.streams == [] and runner.inputs == [] and synth.phrases == []
