"""Whole calls replayed over a real WebSocket against the app under uvicorn, with scripted
ASR/TTS/graph fakes; asserting the exact messages sent and the call record."""

from __future__ import annotations

from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from dialgraph.server.core.call_store import get_call, transcript
from dialgraph.server.core.settings import Settings
from dialgraph.server.core.turns import CallerDigits, CallerText, CallSignal, EndCallRequest, TextChunk, TransferRequest
from dialgraph.server.services import Overrides
from dialgraph.telephony.audio import SILENCE_FRAME
from dialgraph.telephony.call.pacer import message_ms_for
from dialgraph.telephony.simulator.scripted import ScriptedRecognizer, ScriptedRunner, ScriptedSynthesizer, phrase_byte
from dialgraph.telephony.speech.base import Final, Interim
from dialgraph.telephony.speech.vad import EnergyVad
from tests.telephony.harness import (
    DEFAULT_MESSAGE_BYTES,
    LOUD_FRAME,
    Served,
    TwilioMediaClient,
    connected_call,
    expected_messages,
    new_call,
    new_sids,
    serve,
)

GREETING = "Hello and welcome to Acme Dental. How can I help?"


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=sqlite_url, _env_file=None)  # type: ignore[call-arg]


def overrides(recognizer: ScriptedRecognizer, synth: ScriptedSynthesizer, runner: ScriptedRunner) -> Overrides:
    return Overrides(
        recognizer=recognizer,
        synthesizer=synth,
        vad_factory=EnergyVad,
        runners={"scheduling": runner, "support": runner, "sales": runner},
        call_control=object(),
    )


@pytest.fixture
def fakes() -> tuple[ScriptedRecognizer, ScriptedSynthesizer, ScriptedRunner]:
    return ScriptedRecognizer(), ScriptedSynthesizer(), ScriptedRunner(greeting=GREETING)


async def play_out(
    client: TwilioMediaClient,
    first_serial: int,
    synth: ScriptedSynthesizer,
    generation: int,
    *,
    message_bytes: int = DEFAULT_MESSAGE_BYTES,
) -> int:
    """Read one whole reply, assert it message by message, echo its marks; returns the
    index in ``client.received`` where the reply began."""
    start = len(client.received)
    expected_so_far: list[dict[str, object]] = []
    # The reply's phrases are known once its last mark has arrived; read until the reply's
    # final phrase-end mark (the one after which nothing else is queued).
    while True:
        msg = await client.until(lambda m: m["event"] == "mark")
        serials = range(first_serial, len(synth.phrases))
        audio = [synth.audio_for(s) for s in serials]
        expected_so_far = expected_messages(client.stream_sid, audio, generation, message_bytes=message_bytes)
        if msg == expected_so_far[-1] and len(client.received) - start == len(expected_so_far):
            break
    assert client.received[start:] == expected_so_far
    for name in client.marks(start):
        await client.echo_mark(name)
    return start


@pytest.mark.parametrize("lead_ms", [200, 120])  # the default (100 ms messages), and 20 ms frames
async def test_a_whole_call_sends_exact_messages_and_records_the_call(
    settings: Settings, fakes: tuple[ScriptedRecognizer, ScriptedSynthesizer, ScriptedRunner], lead_ms: int
) -> None:
    settings = settings.model_copy(update={"playback_lead_ms": lead_ms})
    message_bytes = message_ms_for(lead_ms) * 8
    recognizer, synth, runner = fakes
    recognizer.script = [
        (8, Interim("I need a", 0.0, 0.1)),
        (10, Final("I need a cleaning", 0.0, 0.2, speech_final=True)),
        (20, Final("no that's all, bye", 0.2, 0.4, speech_final=True)),
    ]
    runner.replies = {
        "I need a cleaning": "Sure. Which day suits you best?",
        "no that's all, bye": [TextChunk("Thanks for calling, "), TextChunk("goodbye!"), EndCallRequest("done")],
    }
    async with connected_call(settings, overrides(recognizer, synth, runner)) as (served, client):
        call_sid, stream_sid = client.call_sid, client.stream_sid
        await play_out(client, 0, synth, generation=1, message_bytes=message_bytes)
        assert synth.phrases == ["Hello and welcome to Acme Dental.", "How can I help?"]

        await client.media(SILENCE_FRAME, 10)
        await play_out(client, 2, synth, generation=2, message_bytes=message_bytes)
        await client.media(SILENCE_FRAME, 10)
        await play_out(client, 4, synth, generation=3, message_bytes=message_bytes)
        assert synth.phrases[4:] == ["Thanks for calling,", "goodbye!"]  # a reply opens on its first clause
        # After its goodbye has played (marks echoed), the session closes the stream.
        assert await client.drain_until_closed() == 1000
        session = await served.session_done(call_sid)

        db = served.app.state.services.db
        call = await get_call(db, call_sid)
        assert call is not None
        assert (call.outcome, call.stream_sid) == ("ended_by_agent", stream_sid)
        events = await transcript(db, call_sid)

    turns = [(e.role, e.text, e.interrupted) for e in events if e.kind == "turn"]
    assert turns == [
        ("agent", GREETING, False),
        ("caller", "I need a cleaning", False),
        ("agent", "Sure. Which day suits you best?", False),
        ("caller", "no that's all, bye", False),
        ("agent", "Thanks for calling, goodbye!", False),
    ]
    assert [e.kind for e in events][-1] == "end_call"
    assert all(e.latency_ms is not None and e.latency_ms >= 0 for e in events if e.role == "agent")
    assert [t.trigger for t in session.timings] == ["greeting", "caller", "caller"]
    assert runner.inputs == [
        ("start", None),
        ("respond", CallerText("I need a cleaning")),
        ("respond", CallerText("no that's all, bye")),
    ]
    ctx = runner.contexts[0]
    assert (ctx.call_sid, ctx.thread_id, ctx.caller, ctx.called, ctx.flow) == (
        call_sid,
        call_sid,
        "+14155550100",
        "+15550009999",
        "scheduling",
    )
    # Nothing outlives the call: the recognition stream is closed, every task awaited
    # (the autouse leak check fails the test otherwise).
    assert recognizer.streams[0].closed


async def test_barge_in_clears_drops_old_audio_and_records_only_heard_words(
    sqlite_settings: Settings, fakes: tuple[ScriptedRecognizer, ScriptedSynthesizer, ScriptedRunner]
) -> None:
    recognizer, synth, runner = fakes
    long_reply = (
        "We are open Monday to Friday from nine until five, "
        "and on Saturday mornings from nine until noon, except on public holidays."
    )
    recognizer.script = [
        (10, Final("when are you open", 0.0, 0.2, speech_final=True)),
        (25, Final("what about Sunday", 0.2, 0.5, speech_final=True)),
    ]
    runner.replies = {"when are you open": long_reply, "what about Sunday": "Closed on Sundays."}
    async with connected_call(sqlite_settings, overrides(recognizer, synth, runner)) as (served, client):
        await play_out(client, 0, synth, generation=1)
        await client.media(SILENCE_FRAME, 10)  # -> "when are you open"

        # The caller hears the first 7 marks (one word each: 800 bytes a word), then talks.
        reply_start = len(client.received)
        await client.until_mark("g2.6")
        for name in [f"g2.{i}" for i in range(7)]:
            await client.echo_mark(name)
        await client.media(LOUD_FRAME, 15)  # 300 ms of speech: barge-in at 200 ms
        clear = await client.until(lambda m: m["event"] == "clear")
        assert clear == {"event": "clear", "streamSid": client.stream_sid}
        clear_at = client.received.index(clear)
        # Twilio returns every pending mark on clear: they must not count as heard.
        for name in client.marks(reply_start):
            if name not in {f"g2.{i}" for i in range(7)}:
                await client.echo_mark(name)

        # The new turn's reply, in a new generation, arrives after the clear.
        new_reply = await client.until(lambda m: m["event"] == "mark" and m["mark"]["name"].startswith("g4."))
        assert new_reply is not None
        await client.stop()
        await client.drain_until_closed()
        await served.session_done(client.call_sid)
        events = await transcript(served.app.state.services.db, client.call_sid)

    old_serials = {phrase_byte(s) for s, p in enumerate(synth.phrases) if p in long_reply}
    after_clear = client.audio(clear_at)
    assert after_clear, "the new reply's audio follows the clear"
    assert not any(frame[0] in old_serials for frame in after_clear)
    assert all(frame[0] == phrase_byte(synth.phrases.index("Closed on Sundays.")) for frame in after_clear)
    heard = "We are open Monday to Friday from"
    assert runner.heard == [heard]
    assert runner.inputs[-1] == ("respond", CallerText("what about Sunday"))
    agent_turns = [(e.text, e.interrupted) for e in events if e.kind == "turn" and e.role == "agent"]
    assert (heard, True) in agent_turns


async def test_dtmf_reaches_the_graph_and_a_transfer_is_recorded_before_the_stream_ends(
    sqlite_settings: Settings, fakes: tuple[ScriptedRecognizer, ScriptedSynthesizer, ScriptedRunner]
) -> None:
    recognizer, synth, runner = fakes
    runner.replies = {
        "digits:0": [
            TextChunk("One moment, I'll put you through."),
            TransferRequest(target="front_desk", reason="caller pressed 0", summary="Caller wants a human."),
        ]
    }
    async with connected_call(sqlite_settings, overrides(recognizer, synth, runner)) as (served, client):
        await client.until(lambda m: m["event"] == "media")
        await client.dtmf("0")  # during the greeting: interrupts it
        await client.until(lambda m: m["event"] == "clear")
        clear_at = len(client.received)
        start = await play_out(client, 2, synth, generation=3)
        assert start >= clear_at
        assert await client.drain_until_closed() == 1000
        await served.session_done(client.call_sid)
        db = served.app.state.services.db
        call = await get_call(db, client.call_sid)
        events = await transcript(db, client.call_sid)

    assert runner.inputs[-1] == ("respond", CallerDigits("0"))
    assert call is not None
    assert (call.outcome, call.transfer_target, call.transfer_reason, call.transfer_summary) == (
        "transfer_requested",
        "front_desk",
        "caller pressed 0",
        "Caller wants a human.",
    )
    kinds = [e.kind for e in events]
    assert "dtmf" in kinds and kinds[-1] == "transfer"


async def test_a_returning_stream_resumes_with_the_tokens_signal(
    sqlite_settings: Settings, fakes: tuple[ScriptedRecognizer, ScriptedSynthesizer, ScriptedRunner]
) -> None:
    recognizer, synth, runner = fakes
    runner.replies = {"signal:transfer_failed:busy": "Nobody is free right now. Shall I take a message?"}
    providers = overrides(recognizer, synth, runner)
    async with connected_call(sqlite_settings, providers, signal="transfer_failed:busy") as (served, client):
        await play_out(client, 0, synth, generation=1)
        await client.stop()
        await client.drain_until_closed()
        await served.session_done(client.call_sid)
    assert runner.inputs == [("respond", CallSignal("transfer_failed", "busy"))]
    assert synth.phrases == ["Nobody is free right now.", "Shall I take a message?"]


async def test_gaps_are_filled_with_silence_and_duplicates_dropped(
    sqlite_settings: Settings, fakes: tuple[ScriptedRecognizer, ScriptedSynthesizer, ScriptedRunner]
) -> None:
    recognizer, synth, runner = fakes
    frames = [bytes([0x10 + i]) * 160 for i in range(6)]
    async with connected_call(sqlite_settings, overrides(recognizer, synth, runner)) as (served, client):
        await client.send(client.media_message(frames[0], chunk=1, ts=0))
        await client.send(client.media_message(frames[1], chunk=2, ts=20))
        await client.send(client.media_message(frames[1], chunk=2, ts=20))  # duplicate
        await client.send(client.media_message(frames[4], chunk=5, ts=80))  # chunks 3, 4 lost
        await client.send(client.media_message(frames[5], chunk=6, ts=160))  # 60 ms timestamp gap
        await client.send(client.media_message(frames[2], chunk=3, ts=40))  # late: dropped
        await client.stop()
        await client.drain_until_closed()
        session = await served.session_done(client.call_sid)
    silence = SILENCE_FRAME
    assert bytes(recognizer.streams[0].audio) == b"".join(
        [frames[0], frames[1], silence, silence, frames[4], silence, silence, silence, frames[5]]
    )
    assert (session.state.duplicates, session.state.silence_frames) == (2, 5)


@pytest.mark.parametrize("case", ["bad signature", "no signature"])
async def test_handshake_without_a_valid_signature_is_refused(
    sqlite_settings: Settings, fakes: tuple[ScriptedRecognizer, ScriptedSynthesizer, ScriptedRunner], case: str
) -> None:
    recognizer, synth, runner = fakes
    call_sid, stream_sid = new_sids()
    async with serve(sqlite_settings, overrides(recognizer, synth, runner)) as served:
        signature = "bm90IGEgc2lnbmF0dXJlIGF0IGFsbA==" if case == "bad signature" else None
        with pytest.raises(InvalidStatus) as info:
            async with TwilioMediaClient.connect(
                served.url, sqlite_settings, call_sid=call_sid, stream_sid=stream_sid, signature=signature
            ):
                pass
        assert info.value.response.status_code == 403
    assert recognizer.streams == [] and runner.inputs == []


@pytest.mark.parametrize("case", ["missing", "forged", "other call", "expired", "garbage start"])
async def test_a_socket_without_a_valid_token_is_closed_before_any_provider_is_touched(
    sqlite_settings: Settings, fakes: tuple[ScriptedRecognizer, ScriptedSynthesizer, ScriptedRunner], case: str
) -> None:
    from dialgraph.server.core.security import issue_stream_token

    recognizer, synth, runner = fakes
    # The call is recorded and its socket signed; only what its start message carries is wrong.
    async with connected_call(sqlite_settings, overrides(recognizer, synth, runner), start=False) as (_, client):
        call_sid = client.call_sid
        secret = sqlite_settings.stream_token_secret.get_secret_value()
        token: str | None = None  # "missing"
        if case == "forged":
            token = issue_stream_token("another secret", call_sid=call_sid, thread_id=call_sid, flow="x", ttl_s=60)
        elif case == "other call":
            token = issue_stream_token(secret, call_sid="CA" + "9" * 32, thread_id=call_sid, flow="x", ttl_s=60)
        elif case == "expired":
            token = issue_stream_token(secret, call_sid=call_sid, thread_id=call_sid, flow="x", ttl_s=10, now=1e9)
        if case == "garbage start":
            await client.send('{"event": "start"}')
        else:
            await client.start(token)
        assert await client.drain_until_closed() == 1008
        assert client.received == []
    assert recognizer.streams == [] and runner.inputs == []


async def test_server_shutdown_ends_live_calls_and_awaits_them(
    sqlite_settings: Settings, fakes: tuple[ScriptedRecognizer, ScriptedSynthesizer, ScriptedRunner]
) -> None:
    recognizer, synth, runner = fakes
    runner.greeting = "word " * 200  # 20 s of audio: still playing at shutdown
    call_sid, stream_sid = new_sids()
    served: Served
    async with serve(sqlite_settings, overrides(recognizer, synth, runner)) as served:
        token = await new_call(sqlite_settings, served.app, call_sid=call_sid)
        ctx = TwilioMediaClient.connect(served.url, sqlite_settings, call_sid=call_sid, stream_sid=stream_sid)
        client = await ctx.__aenter__()
        await client.start(token)
        await client.until(lambda m: m["event"] == "mark")
        assert call_sid in served.app.state.active_calls
    # uvicorn and the lifespan's close_active_calls have ended the call.
    code = await client.drain_until_closed()
    await ctx.__aexit__(None, None, None)
    assert code in (1001, 1012)
    assert served.finished and served.finished[0].ctx.call_sid == call_sid
    assert recognizer.streams[0].closed
    assert served.app.state.active_calls == {}
