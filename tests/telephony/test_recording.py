"""Call recording: the recorder's stream clock and barge-in cut (pure, a fake clock), the
WAV on disk (one file per call, later streams appended), the admin-only routes (API token,
dashboard cookie) and erasure of a person's recordings, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import re
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from dialgraph.graphs.flows.base import with_consent
from dialgraph.server.app import create_app
from dialgraph.server.core.db import Database
from dialgraph.server.core.flow_config import default_flows
from dialgraph.server.core.models import Call
from dialgraph.server.core.settings import Settings
from dialgraph.server.privacy.erasure import erase_person_by_settings
from dialgraph.server.services import Overrides
from dialgraph.telephony.audio import SILENCE_FRAME, pcm16_to_ulaw
from dialgraph.telephony.call.recording import CallRecorder, find_recording
from dialgraph.telephony.simulator.text_speech import TextRecognizer, TextSynthesizer, TextVad

BASE = "http://console.test"
ADMIN = {"Authorization": "Bearer dev-admin-token"}
MAY = dt.datetime(2026, 5, 4, 12, tzinfo=dt.UTC)


class Clock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def tone(ms: int, level: int = 8000) -> bytes:
    """``ms`` of a constant-level signal, mu-law (decodes to about ``level``)."""
    return pcm16_to_ulaw(np.full(8 * ms, level, dtype="<i2").tobytes())


def read(path: Path) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        params = w.getparams()
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return params, frames


def loud(channel: np.ndarray) -> np.ndarray:
    return np.abs(channel.astype(np.int32)) > 1000


def test_channels_are_placed_on_the_stream_clock_and_a_clear_cuts_the_unheard_audio(tmp_path: Path) -> None:
    clock = Clock()
    rec = CallRecorder(call_sid="CA1", data_dir=tmp_path, clock=clock, now=lambda: MAY)
    # 1 s of caller frames, silence except 0.40-0.60 s; frame 10 arrives 30 ms late (jitter).
    for n in range(50):
        clock.t = 100.0 + n * 0.02 + (0.03 if n == 10 else 0.0)
        rec.caller(tone(20) if 20 <= n < 30 else SILENCE_FRAME)
    # The agent's reply: 100 ms messages sent up to 200 ms ahead, playing from 0.10 s on.
    for k in range(8):
        rec.agent(tone(100, 4000), 100.1 + k * 0.1)
    rec.cleared(100.45)  # the caller barged in: the clear went out at 0.45 s
    rec.agent(tone(100, 4000), 100.7)  # the next reply, after the caller's turn
    path = rec.write()
    assert path == tmp_path / "recordings" / "2026-05" / "CA1.wav"
    params, frames = read(path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, 8000)
    assert len(frames) == 8000  # 1 s: the caller's 50 frames (the next reply ends at 0.8 s)
    left, right = loud(frames[:, 0]), loud(frames[:, 1])
    assert not left[:3200].any() and left[3200:4800].all() and not left[4800:].any()
    assert not right[:800].any() and right[800:3600].all()  # 0.10 .. 0.45 s heard
    assert not right[3600:5600].any()  # scheduled after the clear: never heard, not recorded
    assert right[5600:6400].all() and not right[6400:].any()


def test_agent_audio_before_the_first_caller_frame_starts_the_file(tmp_path: Path) -> None:
    clock = Clock()
    rec = CallRecorder(call_sid="CA2", data_dir=tmp_path, clock=clock, now=lambda: MAY)
    rec.agent(tone(100), 99.9)
    for n in range(10):
        clock.t = 100.0 + n * 0.02
        rec.caller(tone(20))
    _, frames = read(rec.write() or tmp_path)
    assert len(frames) == 800 + 1600  # 0.1 s of agent before the stream's first frame
    assert loud(frames[:800, 1]).all() and not loud(frames[:800, 0]).any()
    assert loud(frames[800:, 0]).all() and not loud(frames[800:, 1]).any()


def test_a_later_stream_is_appended_to_the_calls_file_and_memory_is_bounded(tmp_path: Path) -> None:
    first = CallRecorder(call_sid="CA3", data_dir=tmp_path, clock=Clock(), now=lambda: MAY)
    for _ in range(25):
        first.caller(tone(20))
    first.write()
    june = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)  # the month folder stays the first stream's
    second = CallRecorder(call_sid="CA3", data_dir=tmp_path, max_seconds=1, clock=Clock(), now=lambda: june)
    for _ in range(100):  # 2 s offered, 1 s kept
        second.caller(SILENCE_FRAME)
    path = second.write()
    assert path == tmp_path / "recordings" / "2026-05" / "CA3.wav" == find_recording(tmp_path, "CA3")
    _, frames = read(path)
    assert len(frames) == 4000 + 8000
    assert loud(frames[:4000, 0]).all() and not loud(frames[4000:, 0]).any()
    assert not list(tmp_path.rglob("*.tmp"))
    assert CallRecorder(call_sid="CA4", data_dir=tmp_path).write() is None  # nothing heard: no file
    assert find_recording(tmp_path, "../CA3") is None
    with pytest.raises(ValueError):
        CallRecorder(call_sid="../etc", data_dir=tmp_path)


def recorded(data_dir: Path, sid: str) -> Path:
    rec = CallRecorder(call_sid=sid, data_dir=data_dir)
    for _ in range(10):
        rec.caller(tone(20))
    path = rec.write()
    assert path is not None
    return path


@pytest.fixture
async def client(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings.model_copy(update={"public_url": BASE})
    app = create_app(
        settings,
        overrides=Overrides(db=db, recognizer=TextRecognizer(), synthesizer=TextSynthesizer(), vad_factory=TextVad),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c,
    ):
        yield c


async def test_recordings_are_served_to_the_admin_only(
    client: httpx.AsyncClient, settings: Settings, db: Database
) -> None:
    async with db.sessionmaker() as s, s.begin():
        s.add(Call(sid="CArec", from_number="+15550100009", to_number="+15550001000", thread_id="CArec"))
        s.add(Call(sid="CAnone", from_number="+15550100009", to_number="+15550001000", thread_id="CAnone"))
    path = recorded(settings.data_dir, "CArec")

    ok = await client.get("/api/calls/CArec/recording", headers=ADMIN)
    assert ok.status_code == 200 and ok.headers["content-type"] == "audio/wav"
    assert ok.content == path.read_bytes()
    assert (await client.get("/api/calls/CArec/recording")).status_code == 401
    bad = {"Authorization": "Bearer not-the-token"}
    assert (await client.get("/api/calls/CArec/recording", headers=bad)).status_code == 401
    assert (await client.get("/api/calls/CAnone/recording", headers=ADMIN)).status_code == 404
    assert (await client.get("/api/calls/..%2Fdialgraph.db/recording", headers=ADMIN)).status_code == 404

    shown = (await client.get("/api/calls/CArec", headers=ADMIN)).json()
    assert shown["recording_url"] == "/api/calls/CArec/recording"
    assert (await client.get("/api/calls/CAnone", headers=ADMIN)).json()["recording_url"] is None

    # The dashboard's copy wants the session cookie: none is a redirect to the login form.
    page = await client.get("/dashboard/calls/CArec/recording")
    assert page.status_code == 303 and page.headers["location"].startswith("/dashboard/login")
    form = await client.get("/dashboard/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    login = await client.post(
        "/dashboard/login", data={"token": "dev-admin-token", "csrf": csrf[1], "next": "/dashboard/live"}
    )
    assert login.status_code == 303
    page = await client.get("/dashboard/calls/CArec/recording")
    assert page.status_code == 200 and page.content == path.read_bytes()
    assert (await client.get("/dashboard/calls/CAnone/recording")).status_code == 404


async def test_erasure_deletes_the_persons_recordings_only(settings: Settings, db: Database) -> None:
    person, other, ours = "+919812345678", "+15550107777", "+15550001000"
    async with db.sessionmaker() as s, s.begin():
        s.add(Call(sid="CAp1", from_number=person, to_number=ours, thread_id="p1"))
        s.add(Call(sid="CAp2", from_number=ours, to_number=person, thread_id="p2", direction="outbound"))
        s.add(Call(sid="CAo1", from_number=other, to_number=ours, thread_id="o1"))
    mine = [recorded(settings.data_dir, sid) for sid in ("CAp1", "CAp2")]
    theirs = recorded(settings.data_dir, "CAo1")
    report = await erase_person_by_settings(settings, person, db=db)
    assert report.recordings == 2
    assert not any(p.exists() for p in mine) and theirs.exists()
    again = await erase_person_by_settings(settings, person, db=db)
    assert again.recordings == 0


def test_the_consent_line_opens_the_greeting_only_when_the_flow_records() -> None:
    flow = default_flows()["support"]
    said = "This call may be recorded."
    assert with_consent(flow.model_copy(update={"recording_consent": said}), "Hello.") == "Hello."  # not recording
    assert with_consent(flow.model_copy(update={"recording": True}), "Hello.") == "Hello."  # no line set
    on = flow.model_copy(update={"recording": True, "recording_consent": said})
    assert with_consent(on, "Hello.") == "This call may be recorded. Hello."
