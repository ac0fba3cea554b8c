"""Larger outbound media messages: exact messages, coalesced across TTS blocks of one
phrase, never across phrases, with a mark after every message of 100 ms."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json

from dialgraph.telephony.call.pacer import AudioPacer, StreamClosedByServer, mark_every_bytes_for, message_ms_for
from dialgraph.telephony.call.playback import PlaybackTracker

SID = "MZ" + "a" * 32


class TrackedReply:
    """The pacer's view of a reply: its playback tracker names the marks."""

    def __init__(self, tracker: PlaybackTracker) -> None:
        self.tracker = tracker
        self.sent = asyncio.Event()

    def frame_sent(self, phrase: int, nbytes: int, phrase_end: bool) -> str | None:
        return self.tracker.frame_sent(phrase, nbytes, phrase_end)

    def audio_sent(self) -> None:
        self.sent.set()


def test_message_size_follows_the_lead_and_keeps_100_ms_of_slack() -> None:
    assert [message_ms_for(lead) for lead in (20, 120, 140, 160, 199, 200)] == [20, 20, 40, 60, 80, 100]
    assert [mark_every_bytes_for(n) for n in (160, 320, 480, 640, 800)] == [800, 640, 480, 640, 800]


async def test_100_ms_messages_coalesce_blocks_of_a_phrase_and_mark_each_message() -> None:
    sent: list[dict[str, object]] = []
    tracker = PlaybackTracker(mark_every_bytes=mark_every_bytes_for(800))
    tracker.start_reply(1)
    ticks = itertools.count()
    reply = TrackedReply(tracker)

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    async def close(code: int) -> None:
        pass

    pacer = AudioPacer(
        stream_sid=SID,
        send=send,
        close=close,
        lead_s=0.2,
        message_bytes=800,
        clock=lambda: float(next(ticks)),  # a second passes per reading: nothing ever waits
    )
    tracker.add_phrase("one two")
    tracker.add_phrase("three")
    # Phrase 0 arrives as TTS blocks of 480 and 1120 bytes, then its 100-byte tail; phrase 1 in one block.
    phrase0 = bytes([1]) * 480 + bytes([2]) * 1120 + bytes([3]) * 100
    pacer.audio(reply, 0, phrase0[:480], phrase_end=False)
    pacer.audio(reply, 0, phrase0[480:1600], phrase_end=False)
    pacer.audio(reply, 0, phrase0[1600:], phrase_end=True)
    phrase1 = bytes([4]) * 900
    pacer.audio(reply, 1, phrase1, phrase_end=True)
    pacer.reply_end(reply)
    task = asyncio.create_task(pacer.run())
    await asyncio.wait_for(reply.sent.wait(), 10)
    pacer.close()
    try:
        await task
    except StreamClosedByServer:
        pass

    def media(audio: bytes) -> dict[str, object]:
        return {"event": "media", "streamSid": SID, "media": {"payload": base64.b64encode(audio).decode()}}

    def mark(n: int) -> dict[str, object]:
        return {"event": "mark", "streamSid": SID, "mark": {"name": f"g1.{n}"}}

    assert (
        sent
        == [
            media(phrase0[:800]),
            mark(0),
            media(phrase0[800:1600]),
            mark(1),
            media(phrase0[1600:]),  # the phrase's tail goes alone: a phrase end has its own mark
            mark(2),
            media(phrase1[:800]),
            mark(3),
            media(phrase1[800:]),
            mark(4),
        ]
    )
