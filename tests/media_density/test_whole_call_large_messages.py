"""A whole call over a real WebSocket with a 200 ms playback lead: 100 ms media messages
with a mark after each, Twilio-shaped inbound frames (the codec's fast path), and the VAD
consulted only while the agent holds the floor."""

from __future__ import annotations

from pathlib import Path

from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.audio import SILENCE_FRAME
from dialgraph.telephony.simulator.scripted import ScriptedRecognizer, ScriptedRunner, ScriptedSynthesizer
from dialgraph.telephony.speech.base import Final
from dialgraph.telephony.speech.vad import EnergyVad
from tests.telephony.harness import TwilioMediaClient, expected_messages, new_call, new_sids, serve

GREETING = "Hello and welcome to Acme Dental. How can I help?"


class CountingVad(EnergyVad):
    frames = 0

    def speech_probability(self, frame: bytes) -> float:
        CountingVad.frames += 1
        return super().speech_probability(frame)


async def play_reply(client: TwilioMediaClient, synth: ScriptedSynthesizer, serials: range, generation: int) -> None:
    start = len(client.received)
    while True:  # the phrases are known once synthesized: read until the reply's last mark
        msg = await client.until(lambda m: m["event"] == "mark")
        if len(synth.phrases) >= serials.stop:
            want = expected_messages(
                client.stream_sid, [synth.audio_for(s) for s in serials], generation, message_bytes=800
            )
            if msg == want[-1] and len(client.received) - start == len(want):
                break
    assert client.received[start:] == want
    for name in client.marks(start):
        await client.echo_mark(name)


async def test_a_200_ms_lead_sends_100_ms_messages_and_the_vad_runs_only_while_the_agent_speaks(
    tmp_path: Path, sqlite_url: str
) -> None:
    settings = Settings(data_dir=tmp_path, database_url=sqlite_url, playback_lead_ms=200, _env_file=None)  # type: ignore[call-arg]
    recognizer = ScriptedRecognizer([(10, Final("I need a cleaning", 0.0, 0.2, speech_final=True))])
    synth = ScriptedSynthesizer(bytes_per_word=500, chunk_bytes=700)  # TTS blocks that do not line up with messages
    runner = ScriptedRunner(greeting=GREETING, replies={"I need a cleaning": "Sure. Which day suits you best?"})
    overrides = Overrides(
        recognizer=recognizer,
        synthesizer=synth,
        vad_factory=CountingVad,
        runners={"scheduling": runner},
        call_control=object(),
    )
    CountingVad.frames = 0
    call_sid, stream_sid = new_sids()
    async with serve(settings, overrides) as served:
        token = await new_call(settings, served.app, call_sid=call_sid)
        async with TwilioMediaClient.connect(served.url, settings, call_sid=call_sid, stream_sid=stream_sid) as client:
            await client.start(token)
            await play_reply(client, synth, range(2), generation=1)
            # The greeting has played: the caller holds the floor; ten frames end the turn.
            await client.media(SILENCE_FRAME, 10)  # serialized exactly as Twilio does (TwilioProtocol)
            await play_reply(client, synth, range(2, 4), generation=2)
            assert CountingVad.frames == 0
            await client.stop()
        session = await served.session_done(call_sid)
    assert session.state.frames_in == 10
    assert session.state.protocol_errors == 0
    assert runner.inputs[-1][0] == "respond"
