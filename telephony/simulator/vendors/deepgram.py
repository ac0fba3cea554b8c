"""A local Deepgram stand-in: the live-streaming server (``/v1/listen``) for the real deepgram-sdk.

It speaks Deepgram's wire protocol (query parameters at the handshake, binary audio in,
``KeepAlive``/``Finalize``/``CloseStream`` JSON in; ``Results``, ``SpeechStarted``,
``UtteranceEnd``, ``Metadata`` JSON out) and records what it received.

It cannot recognise speech, so test audio encodes words: ``word_audio`` fills each word's
200 ms with one mu-law byte value that names the word (``WORD_BASE + index`` in the
vocabulary) and separates words with silence. The fake follows the audio timeline (bytes
received, not the wall clock): a word ends when its run ends; ``endpointing`` ms of silence
-> final ``Results`` with ``speech_final``; ``utterance_end_ms`` -> ``UtteranceEnd``.

Languages: with ``language=multi`` (nova-3's code-switching mode) every word carries a
``language`` tag and each result's alternative the ``languages`` heard, most words first,
like the vendor. The fake tags a word ``hi`` when it is Devanagari or a romanised Hindi
word (``dialgraph.server.core.language.HINDI_WORDS``), else ``en``. Every query parameter
is recorded, repeated ones (``keyterm``) as lists in ``ListenConnection.params``.

Timing (``DeepgramTiming``; the default adds no delay, so tests see results at once):
``result_latency_ms`` holds every message back that long after the audio that produced it
arrived (Deepgram quotes sub-300 ms streaming latency for Nova; 200 ms models it);
``interim_every_ms`` sends an interim at a word's end only when that much audio passed since
the last one (Deepgram's interims come about once a second of audio: its "Using Interim
Results" example shows 0.000-1.100, 0.000-2.100, ...). Endpointing already follows the audio.

Faults: ``drop_after_words`` aborts the TCP connection (no close frame) right after that
many words arrived on one connection (once); ``refuse`` answers the handshake with HTTP 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from dialgraph.server.core.language import HINDI_WORDS

WORD_BASE = 0x10
SILENCE = {0xFF, 0x7F}
RATE = 8000
_DEVANAGARI = re.compile(r"[\u0900-\u097F]")


def word_language(word: str) -> str:
    """The tag the fake gives ``word`` under ``language=multi``."""
    return "hi" if _DEVANAGARI.search(word) or word.lower() in HINDI_WORDS else "en"


def word_audio(words: list[str], vocab: list[str], *, word_ms: int = 200, gap_ms: int = 100, tail_ms: int = 0) -> bytes:
    """Audio the fake 'hears' as ``words`` (one byte value per vocabulary word)."""
    out = bytearray()
    for i, w in enumerate(words):
        if i:
            out += bytes([0xFF]) * (RATE * gap_ms // 1000)
        out += bytes([WORD_BASE + vocab.index(w)]) * (RATE * word_ms // 1000)
    out += bytes([0xFF]) * (RATE * tail_ms // 1000)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class DeepgramTiming:
    """How late the stand-in answers, modelled on the vendor's published behaviour."""

    result_latency_ms: float = 0.0  # each message, after the audio that produced it arrived
    interim_every_ms: float = 0.0  # 0: an interim at every word's end


# Deepgram's published figures: "sub-300 ms" streaming latency (Nova), interim results about
# once per second of audio (developers.deepgram.com/docs/using-interim-results).
DEEPGRAM_TIMING = DeepgramTiming(result_latency_ms=200.0, interim_every_ms=1000.0)


@dataclass
class ListenConnection:
    """What one client connection sent: ``query`` holds each parameter's last value,
    ``params`` every value (``keyterm`` may repeat)."""

    query: dict[str, str]
    headers: dict[str, str]
    params: dict[str, list[str]] = field(default_factory=dict)
    audio: bytearray = field(default_factory=bytearray)
    controls: list[dict[str, Any]] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    dropped: bool = False


class DeepgramFake:
    """``async with DeepgramFake(vocab) as fake:`` then point the SDK at ``fake.url``."""

    def __init__(
        self,
        vocab: list[str],
        *,
        api_key: str = "dg-test-key",
        drop_after_words: int | None = None,
        timing: DeepgramTiming = DeepgramTiming(),  # noqa: B008 - frozen
        record_audio: bool = True,
    ) -> None:
        if len(vocab) > 0x60:
            raise ValueError("vocabulary too large for the byte encoding")
        self.vocab = vocab
        self.timing = timing
        self.record_audio = record_audio  # off for load runs: hundreds of streams for minutes
        self.api_key = api_key
        self.drop_after_words = drop_after_words
        self.refuse = False
        self.connections: list[ListenConnection] = []
        self.rejected: list[tuple[int, str]] = []
        self.keepalive = asyncio.Event()
        self._server: Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}"

    def env(self) -> dict[str, str]:
        """The environment that points a ``dialgraph serve`` process at this stand-in."""
        return {"DEEPGRAM_API_KEY": self.api_key, "DEEPGRAM_URL": self.url}

    async def __aenter__(self) -> DeepgramFake:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._check)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        reason = None
        if self.refuse:
            reason = (503, "refused by fault injection")
        elif url.path != "/v1/listen":
            reason = (404, f"no route {url.path}")
        elif request.headers.get("Authorization") != f"Token {self.api_key}":
            reason = (401, "invalid credentials")
        elif query.get("encoding") != "mulaw" or query.get("sample_rate") != "8000":
            reason = (400, "expected encoding=mulaw&sample_rate=8000")
        if reason:
            self.rejected.append(reason)
            return Response(reason[0], "Rejected", Headers(), reason[1].encode())
        return None

    def _session(self, ws: ServerConnection, conn: ListenConnection) -> _Session:
        """One connection's timeline (``deepgram_script.ScriptedDeepgram`` hears real speech)."""
        return _Session(self, ws, conn)

    async def _handle(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path)  # type: ignore[union-attr]
        params = parse_qs(url.query)
        query = {k: v[-1] for k, v in params.items()}
        conn = ListenConnection(query=query, headers=dict(ws.request.headers), params=params)  # type: ignore[union-attr]
        self.connections.append(conn)
        session = self._session(ws, conn)
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    if await session.audio(message):
                        return
                    continue
                control = json.loads(message)
                conn.controls.append(control)
                kind = control.get("type")
                if kind == "KeepAlive":
                    self.keepalive.set()
                elif kind == "Finalize":
                    await session.finalize(from_finalize=True)
                elif kind == "CloseStream":
                    await session.finalize(from_finalize=True)
                    await session.drain()
                    await ws.send(json.dumps(session.metadata()))
                    await ws.close(1000)
                    return
        finally:
            session.close()


class _Session:
    """The audio timeline of one connection."""

    def __init__(self, fake: DeepgramFake, ws: ServerConnection, conn: ListenConnection) -> None:
        self.fake, self.ws, self.conn = fake, ws, conn
        q = conn.query
        self.endpointing = int(q.get("endpointing", "10")) / 1000
        self.utterance_end = int(q["utterance_end_ms"]) / 1000 if "utterance_end_ms" in q else None
        self.interim = q.get("interim_results") == "true"
        self.vad_events = q.get("vad_events") == "true"
        self.multi = q.get("language") == "multi"
        self.t = 0  # bytes received
        self.run: int | None = None  # byte value of the word being heard
        self.run_start = 0
        self.pending: list[tuple[str, float, float]] = []  # words not finalised yet
        self.window_start = 0.0  # end of the last final
        self.speaking = False
        self.last_word_end: float | None = None
        self.utterance_open = False
        self.request_id = str(uuid.uuid4())
        self.delay_s = fake.timing.result_latency_ms / 1000
        self.interim_every_s = fake.timing.interim_every_ms / 1000
        self.last_interim = 0.0  # audio time of the last interim sent
        # Held-back messages (with result_latency_ms), sent in order by one task.
        self._outbox: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None

    async def audio(self, data: bytes) -> bool:
        """Feed audio; True when the connection was dropped by fault injection."""
        if self.fake.record_audio:
            self.conn.audio += data
        for value, group in itertools.groupby(data):
            n = len(list(group))
            voiced = value not in SILENCE
            if voiced and value != self.run:
                await self._word_end()
                self.run, self.run_start = value, self.t
                if self.vad_events and not self.speaking:
                    await self._send({"type": "SpeechStarted", "channel": [0], "timestamp": self.t / RATE})
                self.speaking = True
            elif not voiced and self.run is not None:
                await self._word_end()
                if self._should_drop():
                    self.conn.dropped = True
                    self.fake.drop_after_words = None
                    self.ws.transport.abort()
                    return True
            self.t += n
            if not voiced:
                await self._silence_checks()
        return False

    def _should_drop(self) -> bool:
        n = self.fake.drop_after_words
        return n is not None and len(self.conn.words) >= n

    async def _word_end(self) -> None:
        if self.run is None:
            return
        word = self.fake.vocab[self.run - WORD_BASE]
        start, end = self.run_start / RATE, self.t / RATE
        self.run = None
        self.conn.words.append(word)
        self.pending.append((word, start, end))
        self.last_word_end = end
        self.utterance_open = True
        if self.interim and end - max(self.last_interim, self.pending[0][1]) >= self.interim_every_s:
            self.last_interim = end
            await self._results(is_final=False, speech_final=False, until=end)

    async def _silence_checks(self) -> None:
        if self.last_word_end is None:
            return
        quiet = self.t / RATE - self.last_word_end
        if self.pending and quiet >= self.endpointing:
            await self._results(is_final=True, speech_final=True, until=self.t / RATE)
            self.speaking = False
        if self.utterance_end is not None and self.utterance_open and quiet >= self.utterance_end:
            self.utterance_open = False
            await self._send({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": self.last_word_end})

    async def finalize(self, *, from_finalize: bool) -> None:
        await self._word_end()
        await self._results(is_final=True, speech_final=False, until=self.t / RATE, from_finalize=from_finalize)
        self.speaking = False

    async def _results(self, *, is_final: bool, speech_final: bool, until: float, from_finalize: bool = False) -> None:
        spoken = [w.capitalize() if i == 0 else w for i, (w, _, _) in enumerate(self.pending)]
        words: list[dict[str, Any]] = [
            {"word": w, "start": s, "end": e, "confidence": 0.99, "punctuated_word": said}
            for (w, s, e), said in zip(self.pending, spoken, strict=True)
        ]
        transcript = " ".join(spoken)
        alternative: dict[str, Any] = {"transcript": transcript, "confidence": 0.99 if words else 0.0, "words": words}
        if self.multi:
            for word in words:
                word["language"] = word_language(word["word"])
            alternative["languages"] = [tag for tag, _ in Counter(w["language"] for w in words).most_common()]
            alternative["languages_hinted"] = []
        message = {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": max(0.0, until - self.window_start),
            "start": self.window_start,
            "is_final": is_final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {"alternatives": [alternative]},
            "metadata": {
                "request_id": self.request_id,
                "model_info": {"name": "general-nova-3", "version": "2025-01-01.0", "arch": "nova-3"},
                "model_uuid": "00000000-0000-0000-0000-000000000003",
            },
        }
        if is_final:
            self.pending = []
            self.window_start = until
        await self._send(message)

    def metadata(self) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": "0" * 64,
            "created": "2025-01-01T00:00:00.000Z",
            "duration": self.t / RATE,
            "channels": 1,
            "models": ["00000000-0000-0000-0000-000000000003"],
            "model_info": {},
        }

    async def _send(self, message: dict[str, Any]) -> None:
        if self.delay_s <= 0:
            await self.ws.send(json.dumps(message))
            return
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._deliver())
        self._outbox.put_nowait((asyncio.get_running_loop().time() + self.delay_s, json.dumps(message)))

    async def _deliver(self) -> None:
        """Send each held-back message when its latency has passed, in order."""
        loop = asyncio.get_running_loop()
        while True:
            due, text = await self._outbox.get()
            try:
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                with contextlib.suppress(ConnectionClosed):
                    await self.ws.send(text)
            finally:
                self._outbox.task_done()

    async def drain(self) -> None:
        """Wait until every held-back message went out (before the closing ``Metadata``)."""
        if self._sender is not None:
            await self._outbox.join()

    def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
