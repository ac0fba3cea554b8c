"""The simulator behaves as Twilio does on the media socket (against a tiny in-test server)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from dialgraph.telephony.simulator.caller import Phone
from dialgraph.telephony.simulator.lean import LeanLeg
from dialgraph.telephony.simulator.leg import TwilioLeg
from dialgraph.telephony.simulator.media import MediaLeg
from dialgraph.telephony.simulator.protocol import SILENCE_PAYLOAD, AgentAudio, AgentMark, TwilioProtocol, Violation

STREAM = "MZ" + "1" * 32
Script = Callable[["Peer"], Awaitable[None]]


class Peer:
    """The server side of the test: sends what the test says, logs what it receives."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []
        self.stream = STREAM  # until the leg's ``start`` names its own
        self.headers = ws.request.headers if ws.request is not None else {}

    async def recv(self) -> dict[str, Any]:
        msg = json.loads(await self.ws.recv())
        self.received.append(msg)
        if msg["event"] == "start":
            self.stream = msg["streamSid"]
        return msg

    async def until(self, pred: Callable[[dict[str, Any]], bool]) -> tuple[dict[str, Any], int]:
        """Receive until ``pred``; returns that message and how many media frames came first."""
        frames = 0
        while True:
            msg = await self.recv()
            if pred(msg):
                return msg, frames
            frames += msg["event"] == "media"

    async def media(self, seconds: float) -> None:
        payload = base64.b64encode(b"\x00\x80" * int(4000 * seconds)).decode()
        await self.ws.send(json.dumps({"event": "media", "streamSid": self.stream, "media": {"payload": payload}}))

    async def mark(self, name: str) -> None:
        await self.ws.send(json.dumps({"event": "mark", "streamSid": self.stream, "mark": {"name": name}}))

    async def clear(self) -> None:
        await self.ws.send(json.dumps({"event": "clear", "streamSid": self.stream}))


def is_mark(name: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["event"] == "mark" and m["mark"]["name"] == name


async def run_leg(script: Script, params: dict[str, str] | None = None) -> tuple[Peer, MediaLeg, list[Violation]]:
    peers: list[Peer] = []

    async def handler(ws: ServerConnection) -> None:
        peer = Peer(ws)
        peers.append(peer)
        assert (await peer.recv())["event"] == "connected"
        assert (await peer.recv())["event"] == "start"
        await script(peer)

    violations: list[Violation] = []
    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        leg = MediaLeg(
            url=f"ws://127.0.0.1:{port}/twilio/media",
            signature="sig",
            phone=Phone(),
            call_sid="CA" + "2" * 32,
            account_sid="AC" + "0" * 32,
            stream_sid=STREAM,
            parameters=params or {"token": "t"},
            on_violation=violations.append,
        )
        end = await leg.run()
    assert end == "server-closed"
    return peers[0], leg, violations


async def test_handshake_start_and_media_look_like_twilio() -> None:
    async def script(peer: Peer) -> None:
        for _ in range(3):
            await peer.recv()

    peer, _, _ = await run_leg(script, {"token": "abc", "flow": "scheduling"})
    assert peer.headers["X-Twilio-Signature"] == "sig"
    start = peer.received[1]
    assert start["sequenceNumber"] == "1" and start["streamSid"] == STREAM
    assert start["start"]["customParameters"] == {"token": "abc", "flow": "scheduling"}
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    media = peer.received[2:]
    assert [m["sequenceNumber"] for m in media] == ["2", "3", "4"]
    assert [m["media"]["chunk"] for m in media] == ["1", "2", "3"]
    assert [m["media"]["timestamp"] for m in media] == ["0", "20", "40"]
    assert all(len(base64.b64decode(m["media"]["payload"])) == 160 for m in media)


async def test_mark_returns_after_queued_audio_has_played() -> None:
    async def script(peer: Peer) -> None:
        await peer.media(1.0)
        await peer.mark("after-1s")
        _, frames = await peer.until(is_mark("after-1s"))
        script.frames = frames  # type: ignore[attr-defined]

    await run_leg(script)
    # One second of agent audio plays while the caller's 20 ms frames keep coming.
    assert script.frames >= 45  # type: ignore[attr-defined]


async def test_mark_with_nothing_queued_returns_at_once() -> None:
    async def script(peer: Peer) -> None:
        await peer.mark("idle")
        await peer.media(1.0)
        await peer.mark("late")
        first, frames_first = await peer.until(is_mark("idle"))
        _, frames_late = await peer.until(is_mark("late"))
        script.result = (frames_first, frames_late)  # type: ignore[attr-defined]

    await run_leg(script)
    frames_first, frames_late = script.result  # type: ignore[attr-defined]
    assert frames_first <= 3
    assert frames_late >= 45


async def test_clear_returns_every_pending_mark_at_once() -> None:
    async def script(peer: Peer) -> None:
        await peer.media(2.0)
        await peer.mark("m1")
        await peer.media(2.0)
        await peer.mark("m2")
        await peer.until(lambda m: m["event"] == "media")
        await peer.clear()
        m1, frames = await peer.until(lambda m: m["event"] == "mark")
        m2 = await peer.recv()
        await peer.mark("after-clear")
        _, frames_after = await peer.until(is_mark("after-clear"))
        script.result = (m1["mark"]["name"], m2, frames, frames_after)  # type: ignore[attr-defined]

    _, leg, violations = await run_leg(script)
    name1, m2, frames, frames_after = script.result  # type: ignore[attr-defined]
    assert name1 == "m1" and m2["event"] == "mark" and m2["mark"]["name"] == "m2"
    assert frames <= 3  # not 4 s of playback
    assert frames_after <= 3  # the buffer is empty after a clear
    assert leg.stats.clears == 1 and leg.stats.marks_returned_by_clear == 2
    assert violations == []


async def test_messages_twilio_would_reject_are_counted() -> None:
    async def script(peer: Peer) -> None:
        good = base64.b64encode(b"\xff" * 160).decode()
        await peer.ws.send(
            json.dumps({"event": "media", "streamSid": STREAM, "media": {"payload": good, "track": "outbound"}})
        )
        await peer.ws.send(json.dumps({"event": "media", "streamSid": "MZwrong", "media": {"payload": good}}))
        await peer.ws.send(json.dumps({"event": "clear", "streamSid": STREAM, "sequenceNumber": "1"}))
        await peer.ws.send(json.dumps({"event": "mark", "streamSid": STREAM, "mark": {"name": 5}}))
        await peer.ws.send(json.dumps({"event": "media", "streamSid": STREAM, "media": {"payload": "%%%"}}))
        await peer.ws.send(b"\x00\x01")
        await peer.ws.send(json.dumps({"event": "stop", "streamSid": STREAM}))
        await peer.media(0.1)  # a valid one is still played
        await peer.recv()

    _, leg, violations = await run_leg(script)
    assert len(violations) == 7
    assert leg.stats.media_in == 1


async def test_dtmf_and_caller_hangup() -> None:
    phone = Phone()
    got: list[dict[str, Any]] = []

    async def handler(ws: ServerConnection) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            got.append(msg)

    async def caller() -> None:
        await phone.press("0")
        phone._hangup = True  # what Phone.hang_up sets; ended is set by the engine

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        leg = MediaLeg(
            url=f"ws://127.0.0.1:{port}/x",
            signature="s",
            phone=phone,
            call_sid="CA1",
            account_sid="AC1",
            stream_sid=STREAM,
            parameters={},
            on_violation=lambda v: None,
        )
        caller_task = asyncio.create_task(caller())
        end = await leg.run()
        await caller_task
    assert end == "caller-hangup"
    events = [m["event"] for m in got]
    assert events[:2] == ["connected", "start"] and events[-1] == "stop"
    dtmf = next(m for m in got if m["event"] == "dtmf")
    assert dtmf["dtmf"] == {"track": "inbound_track", "digit": "0"}
    assert got[-1]["stop"] == {"accountSid": "AC1", "callSid": "CA1"}
    seqs = [int(m["sequenceNumber"]) for m in got[1:]]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_twilio_leg_speaks_a_turn_hears_the_answer_and_drops() -> None:
    caller_audio = bytes([0x10]) * 480  # three frames of "speech"
    heard: list[bytes] = []
    seen: dict[str, Any] = {}
    dropped = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        peer = Peer(ws)
        try:
            await peer.recv()
            seen["start"] = (await peer.recv())["start"]
            while len(heard) < 3:
                frame = base64.b64decode((await peer.recv())["media"]["payload"])
                if frame != b"\xff" * 160:
                    heard.append(frame)
            await peer.media(0.3)
            await peer.mark("end")
            _, seen["frames_before_echo"] = await peer.until(is_mark("end"))
            async for _ in ws:  # read on (a server that stops reading never sees the drop)
                pass
        finally:
            dropped.set()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        leg = TwilioLeg(
            f"http://127.0.0.1:{port}",
            public_url="https://voice.example.com",
            auth_token="tok",
            call_sid="CA" + "3" * 32,
            parameters={"token": "abc"},
        )
        async with leg:
            answer = await leg.turn(caller_audio)
            await leg.drop()
        await asyncio.wait_for(dropped.wait(), 5)
    assert seen["start"]["customParameters"] == {"token": "abc"}
    assert heard == [caller_audio[:160]] * 3
    assert answer == b"\x00\x80" * 1200
    assert seen["frames_before_echo"] >= 12  # the mark came back once its 300 ms had played
    assert leg.closed.is_set() and leg.marks_echoed == 1 and leg.violations == []
    assert leg.first_audio_at is not None


async def test_lean_leg_plays_twilio_from_a_tick_loop() -> None:
    async def script(peer: Peer) -> None:
        await peer.media(0.5)
        await peer.mark("half-second")
        _, frames = await peer.until(is_mark("half-second"))
        script.frames = frames  # type: ignore[attr-defined]
        await peer.ws.close()

    events: list[object] = []

    async def handler(ws: ServerConnection) -> None:
        peer = Peer(ws)
        assert (await peer.recv())["event"] == "connected"
        start = await peer.recv()
        assert start["start"]["customParameters"] == {"token": "t"}
        await script(peer)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        leg = LeanLeg(TwilioProtocol(stream_sid=STREAM, call_sid="CA" + "4" * 32), lambda e, now: events.append(e))
        await leg.open("127.0.0.1", port, path="/twilio/media", signature="sig", parameters={"token": "t"})
        loop = asyncio.get_running_loop()
        while not leg.closed.done():
            leg.tick(loop.time(), SILENCE_PAYLOAD)
            await asyncio.sleep(0.02)
    assert script.frames >= 20  # type: ignore[attr-defined]
    assert [type(e) for e in events] == [AgentAudio, AgentMark]
    assert leg.protocol.stats.marks_echoed == 1
