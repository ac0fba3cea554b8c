"""A recorded call, whole, over the real WebSocket through the simulator (SQLite).

``support_basic`` records (``recording = true`` with a consent line); ``sales_basic`` runs
beside it with recording off. The server's WAV is checked against what the simulated
phone itself heard and said (its own recording, on its own clock): the same caller speech
on the left and the same agent audio on the right at the same moments, the barge-in's cut
reply silent from the cut on, and the text speech decodes to the caller's lines and to
the agent's lines as heard (the unheard rest of the cut reply is not in the file).
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import select

from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import default_flows
from dialgraph.server.core.models import CallEvent
from dialgraph.telephony.audio import pcm16_to_ulaw
from dialgraph.telephony.call.recording import find_recording
from dialgraph.telephony.simulator.cli import SimulationResult, simulate
from dialgraph.telephony.simulator.text_speech import TextRecognizer, TextSynthesizer, decode_texts
from tests.fakes.sim_server import LiveServer, live_server

CONSENT = "This call may be recorded."
ADMIN = {"Authorization": "Bearer dev-admin-token"}
FRAME = 160  # samples in 20 ms


async def run(server: LiveServer, name: str, out: Path) -> SimulationResult:
    return await simulate(
        name,
        url=server.url,
        admin_token="dev-admin-token",
        out_dir=out,
        synthesizer=TextSynthesizer(),
        recognizer=TextRecognizer(),
        database_url=server.database_url,
    )


def stereo(path: Path) -> tuple[tuple[int, int, int], np.ndarray]:
    with wave.open(str(path), "rb") as w:
        params = (w.getnchannels(), w.getsampwidth(), w.getframerate())
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return params, frames


def envelope(channel: np.ndarray) -> np.ndarray:
    """Per 20 ms frame: is there sound (text speech is loud, silence is 0)."""
    n = len(channel) // FRAME
    frames = np.abs(channel[: n * FRAME].astype(np.int32)).reshape(n, FRAME)
    return frames.mean(axis=1) > 500


def segments(env: np.ndarray, min_gap: int = 10) -> list[tuple[int, int]]:
    """Runs of sound (frame indices), gaps shorter than ``min_gap`` frames bridged."""
    out: list[tuple[int, int]] = []
    for i in np.flatnonzero(env):
        if out and i - out[-1][1] <= min_gap:
            out[-1] = (out[-1][0], int(i) + 1)
        else:
            out.append((int(i), int(i) + 1))
    return out


def best_lag(ours: np.ndarray, theirs: np.ndarray) -> int:
    """The offset (frames) of our stream in the phone's call clock where the envelopes agree most."""
    scores = [
        int(np.sum(ours[: max(0, min(len(ours), len(theirs) - lag))] & theirs[lag : lag + len(ours)]))
        for lag in range(max(1, len(theirs) - len(ours) // 2))
    ]
    return int(np.argmax(scores))


def near(a: np.ndarray, b: np.ndarray, slack: int = 2) -> float:
    """Share of a's sound frames with sound in b within ``slack`` frames."""
    grown = b.copy()
    for k in range(1, slack + 1):
        grown[k:] |= b[:-k]
        grown[:-k] |= b[k:]
    loud = np.flatnonzero(a)
    return float(np.mean(grown[loud])) if len(loud) else 1.0


async def test_a_recorded_call_matches_what_the_phone_said_and_heard(tmp_path: Path) -> None:
    flows = default_flows()
    flows["support"] = flows["support"].model_copy(update={"recording": True, "recording_consent": CONSENT})
    out = tmp_path / "out"
    async with live_server(tmp_path, flows=flows) as server:
        support, sales = await asyncio.gather(run(server, "support_basic", out), run(server, "sales_basic", out))
        for result in (support, sales):
            assert result.ok and result.protocol_violations == 0, (result.checks, result.failures)
        async with httpx.AsyncClient(base_url=server.url) as client:
            for _ in range(100):  # the session writes the file once its stream has ended
                if find_recording(tmp_path, support.call_sid) is not None:
                    break
                await asyncio.sleep(0.05)
            ok = await client.get(f"/api/calls/{support.call_sid}/recording", headers=ADMIN)
            assert ok.status_code == 200 and ok.headers["content-type"] == "audio/wav"
            assert (await client.get(f"/api/calls/{support.call_sid}/recording")).status_code == 401
            assert (await client.get(f"/api/calls/{sales.call_sid}/recording", headers=ADMIN)).status_code == 404
            shown = (await client.get(f"/api/calls/{support.call_sid}", headers=ADMIN)).json()
            assert shown["recording_url"] == f"/api/calls/{support.call_sid}/recording"
            assert (await client.get(f"/api/calls/{sales.call_sid}", headers=ADMIN)).json()["recording_url"] is None

    # Recording off: no file. On: one stereo 8 kHz 16-bit WAV, what the API served.
    assert find_recording(tmp_path, sales.call_sid) is None
    path = find_recording(tmp_path, support.call_sid)
    assert path is not None and path.read_bytes() == ok.content
    assert support.legs == 1
    params, ours = stereo(path)
    assert params == (2, 2, 8000)
    assert support.recording is not None
    _, phone = stereo(support.recording)  # the phone's own: caller as said, agent as heard

    # The consent line opens the recorded flow's greeting, and only there.
    agent_lines = [line.text for line in support.transcript if line.role == "agent"]
    assert agent_lines[0].startswith(CONSENT)
    assert not any(CONSENT in line.text for line in sales.transcript)

    # Time: the stream sits at one offset of the phone's call clock; its length is the
    # stream's (the phone's caller track ends with the leg) and the caller speaks at the
    # same moments on both.
    left, right = envelope(ours[:, 0]), envelope(ours[:, 1])
    said, heard = envelope(phone[:, 0]), envelope(phone[:, 1])
    lag = best_lag(left, said)
    assert abs(lag + len(left) - len(said)) <= 10, (lag, len(left), len(said))  # within 0.2 s
    window = slice(lag, lag + len(left))
    assert near(left, said[window], slack=1) > 0.98 and near(said[window], left, slack=1) > 0.98
    # The agent, as the phone heard it (cut by the clear), at the same moments.
    assert near(right, heard[window][: len(right)]) > 0.985 and near(heard[window], right) > 0.985

    # The barge-in: the agent was talking when the caller cut in, stopped within moments
    # of it, and nothing of the cut reply follows while the caller speaks.
    caller_turns = segments(left)
    assert len(caller_turns) == 2, caller_turns
    b0, b1 = caller_turns[1]
    assert right[b0], "the agent was talking when the caller barged in"
    stop = b0 + int(np.argmin(right[b0:]))
    assert stop - b0 <= 40, "cut within 0.8 s of the caller's first word"  # VAD + clear
    assert not right[stop:b1].any(), "agent audio after the clear"
    phone_stop = lag + b0 + int(np.argmin(heard[lag + b0 :]))  # where the phone's audio was cleared
    assert abs(stop - (phone_stop - lag)) <= 2, (stop, phone_stop - lag)  # the unheard lead is not in it

    # Content: the text speech decodes from the WAV. The caller's lines on the left; on
    # the right the agent's lines as heard, and not the unheard rest of the cut reply.
    left_text = decode_texts(pcm16_to_ulaw(ours[:, 0].tobytes()))
    assert left_text == ["What are your opening hours?", "Sorry, can I talk to someone in billing?"]
    right_text = " ".join(decode_texts(pcm16_to_ulaw(ours[:, 1].tobytes())))
    assert right_text.startswith(CONSENT)
    db = Database(server.database_url)
    try:
        async with db.sessionmaker() as s:
            (cut,) = await s.scalars(
                select(CallEvent).where(CallEvent.call_sid == support.call_sid, CallEvent.interrupted.is_(True))
            )
    finally:
        await db.aclose()
    assert cut.data and cut.data["unheard"]
    assert cut.data["unheard"].strip() not in right_text
