"""Thousands of malformed frames on one call while a second call is served without a gap."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import pytest

from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.audio import SILENCE_FRAME
from dialgraph.telephony.simulator.scripted import ScriptedRecognizer, ScriptedRunner, ScriptedSynthesizer
from dialgraph.telephony.speech.base import Final
from dialgraph.telephony.speech.vad import EnergyVad
from tests.telephony.harness import TwilioMediaClient, new_call, new_sids, serve
from tests.telephony.test_call_session import play_out

GARBAGE_FRAMES = 3000


def garbage(client: TwilioMediaClient, rng: random.Random) -> str | bytes:
    """One frame that is certainly not a valid message for this stream."""
    valid = client.media_message(SILENCE_FRAME, chunk=1, ts=0)
    msg = json.loads(valid)
    kind = rng.randrange(9)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 400))  # binary frame
    if kind == 1:
        return valid[: rng.randrange(1, len(valid) - 1)]  # truncated JSON
    if kind == 2:
        return json.dumps(rng.choice([[], 1, "media", None, 3.5, [msg]]))  # not an object
    if kind == 3:
        msg["event"] = rng.choice(["hangup", "MEDIA", "", 7, None])
    elif kind == 4:
        msg["media"]["payload"] = rng.choice(["***", "a", "=" * 3, 17])
    elif kind == 5:
        msg["media"][rng.choice(["chunk", "timestamp"])] = rng.choice(["-1", "x", 1.5, None, "", "1e3"])
    elif kind == 6:
        msg["streamSid"] = "MZ" + "f" * 32  # another stream's media
    elif kind == 7:
        del msg[rng.choice(["media", "streamSid", "sequenceNumber"])]
    else:
        return json.dumps(
            {"event": "dtmf", "streamSid": client.stream_sid, "sequenceNumber": "9", "dtmf": {"digit": "!!"}}
        )
    return json.dumps(msg)


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return Settings(data_dir=tmp_path, database_url=sqlite_url, _env_file=None)  # type: ignore[call-arg]


async def test_malformed_flood_on_one_call_leaves_another_call_untouched(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    recognizer = ScriptedRecognizer([(10, Final("I need a cleaning", 0.0, 0.2))])
    synth = ScriptedSynthesizer()
    runner = ScriptedRunner(replies={"I need a cleaning": "Sure. Which day suits you best?"})
    overrides = Overrides(
        recognizer=recognizer,
        synthesizer=synth,
        vad_factory=EnergyVad,
        runners={"scheduling": runner},
        call_control=object(),
    )
    (sid_a, stream_a), (sid_b, stream_b) = new_sids(), new_sids()
    rng = random.Random(20240611)
    async with serve(settings, overrides) as served:
        token_a = await new_call(settings, served.app, call_sid=sid_a)
        token_b = await new_call(settings, served.app, call_sid=sid_b)
        async with (
            TwilioMediaClient.connect(served.url, settings, call_sid=sid_a, stream_sid=stream_a) as a,
            TwilioMediaClient.connect(served.url, settings, call_sid=sid_b, stream_sid=stream_b) as b,
        ):
            await a.start(token_a)
            await play_out(a, 0, synth, generation=1)
            await b.start(token_b)
            await play_out(b, 2, synth, generation=1)

            async def flood() -> None:
                for _ in range(GARBAGE_FRAMES):
                    await a.send(garbage(a, rng))

            async def converse() -> None:
                for _ in range(10):
                    await b.media(SILENCE_FRAME)
                    await asyncio.sleep(0)
                await play_out(b, 4, synth, generation=2)

            await asyncio.gather(flood(), converse())
            # The flooded call is still alive and answers.
            await a.media(SILENCE_FRAME, 10)
            await play_out(a, 6, synth, generation=2)
            for client in (a, b):
                await client.stop()
                await client.drain_until_closed()
        session_a = await served.session_done(sid_a)
        session_b = await served.session_done(sid_b)

    assert session_a.state.protocol_errors == GARBAGE_FRAMES
    assert session_b.state.protocol_errors == 0
    assert (session_b.state.frames_in, session_b.state.silence_frames, session_b.state.duplicates) == (10, 0, 0)
    assert session_a.state.frames_in == 10
    assert [len(s.audio) for s in recognizer.streams] == [1600, 1600]
    assert synth.phrases[4:6] == synth.phrases[6:8] == ["Sure.", "Which day suits you best?"]
