"""Two real ``dialgraph serve`` processes share one PostgreSQL database and nothing else.

A call starts on instance A; A is SIGKILLed while the caller is hearing a reply; Twilio's
``<Connect action>`` goes to instance B, which reconnects the stream and carries on from
the checkpoint; later a transfer nobody answers comes back to the agent on the same
thread. Speech runs through the Deepgram and ElevenLabs fakes on loopback (configured by
settings, like real providers), the model is the offline one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from sqlalchemy import select

from dialgraph.graphs.checkpoint import checkpointer
from dialgraph.graphs.flows.base import NOBODY_FREE, OFFER_APPOINTMENT, RECONNECTED
from dialgraph.graphs.state import INTERRUPTED, UNSAID
from dialgraph.server.core.db import Database
from dialgraph.server.core.models import Appointment, Call, CallEvent
from dialgraph.telephony.simulator.leg import TwilioLeg
from dialgraph.telephony.simulator.process import ServerProcess, server_env
from dialgraph.telephony.simulator.twiml import stream_parameters
from dialgraph.telephony.simulator.vendors.deepgram import DeepgramFake, word_audio
from dialgraph.telephony.simulator.vendors.elevenlabs import ElevenLabsFake, fake_audio
from dialgraph.telephony.simulator.webhooks import TwilioWebhookClient, call_params, new_call_sid
from dialgraph.tools.speech_format import spoken_datetime

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PUBLIC_URL = "https://voice.example.com"
AUTH_TOKEN = "twilio-auth-token-for-resume-tests"
CALLER = "+15551230042"
OUR_NUMBER = "+15550001001"
TURNS = [
    "i'd like to book an appointment please",
    "next friday at ten",
    "it's ana lopez",
    "when is my appointment",
    "no thanks that's all bye",
]
RINGBACK = "yes please"  # to the offer of hearing the appointment
VOCAB = sorted({w for t in [*TURNS, RINGBACK] for w in t.split()})


def spoken(text: str) -> bytes:
    return word_audio(text.split(), VOCAB, tail_ms=600)


def starts_saying(audio: bytes, text: str) -> bool:
    """``audio`` (the ElevenLabs fake's rendering, phrase by phrase) begins with ``text``.
    Spaces are left out of the comparison: phrases are rendered without their edges."""
    space = fake_audio("a b")[80:160]
    return audio.replace(space, b"").startswith(fake_audio(text).replace(space, b""))


class Instance:
    def __init__(self, proc: ServerProcess) -> None:
        self.proc = proc
        self.http = httpx.AsyncClient(base_url=proc.url, timeout=30)
        self.twilio = TwilioWebhookClient(self.http, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN)

    async def webhook(self, path: str, sid: str, **extra: str) -> str:
        response = await self.twilio.post(path, call_params(sid, from_number=CALLER, to_number=OUR_NUMBER, **extra))
        assert response.status_code == 200, (response.status_code, response.text, self.proc.log_tail())
        return response.text

    def leg(self, sid: str, twiml: str) -> TwilioLeg:
        params = stream_parameters(twiml)
        assert params.get("token"), twiml
        return TwilioLeg(self.proc.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN, call_sid=sid, parameters=params)


async def heard_so_far(db: Database, sid: str) -> str | None:
    async with db.sessionmaker() as s:
        return await s.scalar(select(Call.reply_heard).where(Call.sid == sid))


async def wait_for_heard(db: Database, sid: str, timeout_s: float = 30) -> str:
    """Until instance A has stored a non-empty heard text for the reply now playing."""
    async with asyncio.timeout(timeout_s):
        while not (heard := await heard_so_far(db, sid)):
            await asyncio.sleep(0.02)
    return heard


async def thread_messages(url: str, thread_id: str) -> list[Any]:
    async with AsyncExitStack() as stack:
        saver = await checkpointer(url, stack=stack, pool_size=2)
        tup = await saver.aget_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
        assert tup is not None
        return list(tup.checkpoint["channel_values"]["messages"])


async def test_a_call_survives_sigkill_of_its_instance(tmp_path: Path, pg_dsn: str) -> None:
    url = pg_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    db = Database(url)
    await db.upgrade()  # once, before two instances race to migrate
    async with AsyncExitStack() as stack:
        await checkpointer(url, stack=stack, pool_size=1)  # creates the checkpoint tables
    try:
        async with DeepgramFake(VOCAB) as deepgram, ElevenLabsFake() as elevenlabs:
            env = server_env(
                os.environ,
                DATABASE_URL=url,
                DIALGRAPH_PUBLIC_URL=PUBLIC_URL,
                DIALGRAPH_DATA_DIR=str(tmp_path),
                DIALGRAPH_MODEL="offline",
                DIALGRAPH_LOG_LEVEL="INFO",
                TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                DIALGRAPH_STREAM_TOKEN_SECRET="stream-secret-shared-by-instances",
                **deepgram.env(),
                **elevenlabs.env(),
            )
            proc_a, proc_b = ServerProcess("a", env, tmp_path), ServerProcess("b", env, tmp_path)
            try:
                await asyncio.gather(proc_a.start(), proc_b.start())
                a, b = Instance(proc_a), Instance(proc_b)
                await run_call(a, b, db, url)
            finally:
                await proc_a.kill()
                await proc_b.aclose()
    finally:
        await db.aclose()


async def run_call(a: Instance, b: Instance, db: Database, url: str) -> None:
    sid = new_call_sid()
    # --- instance A answers and the conversation starts --------------------------------
    twiml = await a.webhook("/twilio/voice", sid, CallStatus="ringing")
    async with a.leg(sid, twiml) as leg:
        await leg.until_audio()
        await leg.until_quiet()
        for text in TURNS[:2]:
            await leg.turn(spoken(text))
        # The booking confirmation is playing when A dies.
        before = len(leg.audio)
        leg.say(spoken(TURNS[2]))
        await leg.until_audio(before + 1)
        stored = await wait_for_heard(db, sid)
        await a.proc.kill()
        await asyncio.wait_for(leg.closed.wait(), 30)
        cut_reply_audio = bytes(leg.audio[before:])

    # --- Twilio asks the <Connect action>; instance B picks the call up -----------------
    twiml = await b.webhook("/twilio/stream-ended", sid)
    assert stream_parameters(twiml)["signal"] == "reconnected"
    async with b.leg(sid, twiml) as leg:
        await leg.until_audio()
        await leg.until_quiet()
        resumed_audio = bytes(leg.audio)
        answer = await leg.turn(spoken(TURNS[3]))
        assert starts_saying(answer, "You have one appointment:")
        # The caller asks for a person; nobody answers.
        await leg.turn(digit="0")
        await asyncio.wait_for(leg.closed.wait(), 30)
    dial = await b.webhook("/twilio/stream-ended", sid)
    assert "<Dial" in dial and "+15550100001" in dial
    twiml = await a_or_b_dial_ended(b, sid)
    async with b.leg(sid, twiml) as leg:
        await leg.until_audio()
        await leg.until_quiet()
        await leg.turn(spoken(TURNS[4]))
        await asyncio.wait_for(leg.closed.wait(), 30)  # the agent said goodbye and hung up
    assert "<Hangup" in await b.webhook("/twilio/stream-ended", sid)

    # --- what the checkpoint (read with the saver) says happened -----------------------
    messages = await thread_messages(url, sid)
    caller_turns = [str(m.content).lower() for m in messages if isinstance(m, HumanMessage)]
    # each exactly once; a keypad key is acted on in its run, never stored (graphs/checkpoint.py)
    assert caller_turns == [*TURNS[:4], "(pressed x on the keypad)", TURNS[4]]
    cut = [m for m in messages if isinstance(m, AIMessage) and m.additional_kwargs.get(INTERRUPTED)]
    assert len(cut) == 1
    interrupted = cut[0]
    async with db.sessionmaker() as s:
        repaired = list(
            await s.scalars(select(CallEvent).where(CallEvent.call_sid == sid, CallEvent.interrupted.is_(True)))
        )
        appointments = list(await s.scalars(select(Appointment).where(Appointment.phone == CALLER)))
        call = await s.get(Call, sid)
    # The reply was repaired on B with exactly what A had recorded as heard: a real part of
    # the reply (the audio the caller got starts with it), not all of it.
    assert [e.text for e in repaired] == [interrupted.content]
    assert str(interrupted.content).startswith(stored)
    assert 0 < len(str(interrupted.content)) < len(interrupted.additional_kwargs[UNSAID])
    assert starts_saying(cut_reply_audio, str(interrupted.content))
    assert interrupted.additional_kwargs[UNSAID]
    assert "Friday the" in interrupted.additional_kwargs[UNSAID]
    after = messages[messages.index(interrupted) + 1]
    assert isinstance(after, AIMessage) and str(after.content).startswith(RECONNECTED)
    assert interrupted.additional_kwargs[UNSAID] in str(after.content)
    assert starts_saying(resumed_audio, RECONNECTED)
    nobody = NOBODY_FREE.format(desc="front desk")
    assert any(isinstance(m, AIMessage) and m.content == nobody for m in messages)
    # The booking made on A happened once; the call row tells the story.
    assert len(appointments) == 1 and appointments[0].name == "Ana Lopez"
    assert call is not None
    assert (call.reconnects, call.transfer_status, call.outcome) == (1, "no-answer", "ended_by_agent")
    assert call.reply_heard is None

    # --- the caller rings back (any instance): welcomed by first name, offered the booking -
    second = new_call_sid()
    twiml = await b.webhook("/twilio/voice", second, CallStatus="ringing")
    async with b.leg(second, twiml) as leg:
        await leg.until_audio()
        await leg.until_quiet()
        welcome = f"Welcome back, Ana. {OFFER_APPOINTMENT}"
        assert starts_saying(bytes(leg.audio), welcome)
        first_day = dt.datetime.now(dt.UTC).date()
        answer = await leg.turn(spoken(RINGBACK))
        last_day = dt.datetime.now(dt.UTC).date()
    # The server said the date relative to its own "today": either side of a midnight that
    # may have passed while the caller was speaking.
    start = appointments[0].starts_at.astimezone(dt.UTC)
    said = {spoken_datetime(start, today=day) for day in (first_day, last_day)}
    assert starts_saying(answer, "You have one appointment:")
    messages = await thread_messages(url, second)
    assert messages[0].content == welcome
    assert any(isinstance(m, AIMessage) and any(when in str(m.content) for when in said) for m in messages)
    async with db.sessionmaker() as s:
        ringback = await s.get(Call, second)
    assert ringback is not None and (ringback.thread_id, ringback.previous_thread_id) == (second, sid)


async def a_or_b_dial_ended(b: Instance, sid: str) -> str:
    twiml = await b.webhook("/twilio/dial-ended", sid, DialCallStatus="no-answer", DialCallSid="CA" + "9" * 32)
    assert stream_parameters(twiml)["signal"] == "transfer_failed:no-answer"
    return twiml
