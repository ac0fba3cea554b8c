"""Deepgram live streaming ASR on deepgram-sdk 7.x (``AsyncDeepgramClient``).

One WebSocket per call. Twilio's mu-law 8 kHz goes to Deepgram as is
(``encoding=mulaw&sample_rate=8000``), coalesced into ``chunk_ms`` messages. Deepgram
closes a socket after 10 s without audio, and the SDK sends no keepalives, so the sender
sends ``KeepAlive`` when nothing was pushed for ``keepalive_s``. ``end_input`` sends any
rest, ``Finalize`` and ``CloseStream``, and the events end when Deepgram closes.

A socket that drops mid-call (not closed by us) is reopened up to ``max_reconnects`` times;
the audio sent since the last final result is sent again first, so words the caller said
around the drop are not lost. Deepgram's timestamps restart at 0 on each connection; the
stream maps them back onto one timeline (seconds since the stream began).

Languages: ``stream(language=...)`` takes a flow language (en, en-IN, hi, hi-en) and sends
Deepgram's name for it (``deepgram_language``: ``multi``, its code-switching mode, for hi-en;
``hi``; ``en-IN``; ``en``). With ``multi`` Deepgram tags each word with its language and
lists the languages of a result; each ``Final`` carries them as ``language`` (``hi-en`` when
both Hindi and English words were heard). ``keyterms`` (the flow's vocabulary) go out as
Deepgram's ``keyterm`` parameters on nova-3 (every nova-3 language, ``multi`` included; at
most 500 tokens), as ``keywords`` on older models, which have no keyterm prompting.

The socket is ours, the messages the SDK's. ``listen.v1.connect`` opens its socket with the
legacy ``websockets`` client and its defaults, which offer permessage-deflate (mu-law audio
hardly compresses: deflating it costs CPU on both ends for nothing), and has no option to
turn that off (only ``transport_factory``, which replaces the socket for the whole process).
So ``DeepgramRecognizer.connect`` builds the same URL (``/v1/listen`` on the environment's
``production`` base, the query through the SDK's own encoder) and headers (the client's,
``Authorization: Token <key>`` included), opens it with picows' implementation of the
``websockets`` asyncio client (``picows.websockets``: the same API, framing and masking in C;
~1.3 against ~5.5 µs of CPU a message sent, and a call sends 25-50 a second),
``compression=None`` and no proxy (as before), and hands it to the SDK's
``AsyncV1SocketClient``, which still sends the controls and parses every event into the
SDK's types. A refused handshake becomes the SDK's ``ApiError`` as before.

End of turn: with a turn detector (``turn_detector=`` and ``turn=`` a ``TurnSettings``
whose ``detector`` is not ``off``) each stream times the caller's pauses itself and ends,
holds or leaves the turn to Deepgram's endpointing (``cloud_turns.py``); it sends
``Finalize`` when the detector calls the turn over. Without one, results go out as they
come.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import structlog
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.core.jsonable_encoder import jsonable_encoder
from deepgram.core.query_encoder import encode_query
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v1.socket_client import AsyncV1SocketClient
from deepgram.listen.v1.types import (
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)
from picows.websockets import connect as ws_connect
from picows.websockets.exceptions import InvalidStatus

from dialgraph.server.core.flow_config import TurnSettings
from dialgraph.server.core.language import base as base_language
from dialgraph.server.core.language import deepgram_language
from dialgraph.telephony.speech.base import (
    FRAME_BYTES,
    SAMPLE_RATE,
    Final,
    Interim,
    ProviderError,
    RecognizerCapabilities,
    SpeechStarted,
    UtteranceEnd,
)
from dialgraph.telephony.speech.cloud_turns import CloudTurnRule, CloudTurns
from dialgraph.telephony.speech.stream import QueuedRecognitionStream
from dialgraph.telephony.speech.tasks import cancel_and_wait
from dialgraph.telephony.speech.turn_detector import TurnDetector
from dialgraph.telephony.speech.workers import SpeechWorkers

log = structlog.get_logger(__name__)
_BYTES_PER_S = SAMPLE_RATE  # mu-law: one byte a sample


class DeepgramRecognizer:
    """Deepgram streaming recognizer. ``url`` (ws://host:port) points it at a fake or proxy.
    ``turn_detector`` and ``workers`` (the speech pool it runs in) with ``turn`` (``[turn]``;
    a stream may get its flow's own) turn the semantic end of turn on (module docstring)."""

    def __init__(
        self,
        api_key: str,
        *,
        url: str | None = None,
        model: str = "nova-3",
        language: str = "en",
        endpointing_ms: int = 300,
        utterance_end_ms: int = 1000,
        interim_results: bool = True,
        vad_events: bool = True,
        smart_format: bool = True,
        keepalive_s: float = 4.0,
        connect_timeout_s: float = 3.0,
        max_reconnects: int = 3,
        chunk_ms: int = 40,
        max_buffer_s: float = 30.0,
        turn_detector: TurnDetector | None = None,
        workers: SpeechWorkers | None = None,
        turn: TurnSettings | None = None,
    ) -> None:
        if turn_detector is not None and workers is None:
            raise ValueError("a turn detector runs in the speech pool: pass workers")
        env = DeepgramClientEnvironment.PRODUCTION
        if url:
            ws = url.rstrip("/").replace("https://", "wss://").replace("http://", "ws://")
            env = DeepgramClientEnvironment(base=ws.replace("ws", "http", 1), production=ws, agent=ws, agent_rest=ws)
        self._client = AsyncDeepgramClient(api_key=api_key, environment=env)
        self.options: dict[str, Any] = {
            "model": model,
            "encoding": "mulaw",
            "sample_rate": SAMPLE_RATE,
            "channels": 1,
            "interim_results": str(interim_results).lower(),
            "endpointing": endpointing_ms,
            "utterance_end_ms": utterance_end_ms,
            "vad_events": str(vad_events).lower(),
            "smart_format": str(smart_format).lower(),
        }
        self.language = language
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self.max_reconnects = max_reconnects
        self.chunk_bytes = max(160, SAMPLE_RATE * chunk_ms // 1000)
        self.max_buffer_bytes = int(max_buffer_s * _BYTES_PER_S)
        self.capabilities = RecognizerCapabilities(
            interim_results=interim_results, vad_events=vad_events, keyterms=True, turns=True
        )
        self.turn_detector = turn_detector
        self.workers = workers
        self.turn = turn or TurnSettings()

    def stream(
        self, *, language: str | None = None, keyterms: Sequence[str] = (), turn: TurnSettings | None = None
    ) -> DeepgramStream:
        """A call's stream in ``language`` (a flow language, or Deepgram's own code such
        as ``multi``), primed with ``keyterms``; ``turn``: the flow's ``[turn]`` (default
        the recognizer's)."""
        return DeepgramStream(
            self, language=deepgram_language(language or self.language), keyterms=keyterms, turn=turn or self.turn
        )

    def vocabulary(self, keyterms: Sequence[str]) -> dict[str, list[str]]:
        """The query parameters that prime the model with ``keyterms``: ``keyterm`` on
        nova-3, ``keywords`` on the models before it (nova-3 refuses ``keywords``)."""
        terms = list(dict.fromkeys(t.strip() for t in keyterms if t.strip()))
        if not terms:
            return {}
        if str(self.options["model"]).startswith("nova-3"):
            return {"keyterm": terms}
        return {"keywords": terms}

    def listen_url(self, language: str, keyterms: Sequence[str] = ()) -> str:
        """``/v1/listen`` with the query the SDK's ``listen.v1.connect`` would send."""
        base = self._client._client_wrapper.get_environment().production
        query = encode_query(jsonable_encoder({**self.options, **self.vocabulary(keyterms), "language": language}))
        return f"{base}/v1/listen?{urllib.parse.urlencode(query or [])}"

    @contextlib.asynccontextmanager
    async def connect(self, language: str, keyterms: Sequence[str] = ()) -> AsyncIterator[AsyncV1SocketClient]:
        """One socket, without permessage-deflate, in the SDK's socket client (see the
        module docstring)."""
        headers = self._client._client_wrapper.get_headers()  # User-Agent, session id, Authorization
        try:
            ws = await ws_connect(
                self.listen_url(language, keyterms),
                additional_headers=headers,
                user_agent_header=None,  # the SDK's User-Agent is in ``headers``
                compression=None,
                proxy=None,
                open_timeout=self.connect_timeout_s,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            body = (
                "Websocket initialized with invalid credentials."
                if status == 401
                else "Unexpected error when initializing websocket connection."
            )
            raise ApiError(status_code=status, body=body) from exc
        try:
            yield AsyncV1SocketClient(websocket=ws)  # type: ignore[arg-type]  # typed for the legacy client
        finally:
            await ws.close()

    async def aclose(self) -> None:
        pass


class DeepgramStream(QueuedRecognitionStream):
    """One call's Deepgram session (see the module docstring). ``ready`` is set once a
    socket is open, or once the stream gave up (the error then comes out of the iterator)."""

    def __init__(
        self,
        owner: DeepgramRecognizer,
        *,
        language: str,
        keyterms: Sequence[str] = (),
        turn: TurnSettings | None = None,
    ) -> None:
        super().__init__(ready=False)
        self._owner = owner
        self._language = language
        self._keyterms = tuple(keyterms)
        self._pending = bytearray()  # pushed, not yet sent
        self._chunk_bytes = owner.chunk_bytes  # FRAME_BYTES while low latency is preferred
        self._replay = bytearray()  # sent since the last final (resent after a reconnect)
        self._replay_start = 0.0  # stream time of _replay[0]
        self._conn_base = 0.0  # stream time of the current connection's t=0
        self._wake = asyncio.Event()
        self._sent_at = 0.0  # loop time of the last message sent (keepalive timing)
        self._keepalive_due = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self.reconnects = 0
        self._finalize_due = False
        self.turns: CloudTurns | None = None
        if turn is not None and turn.detector != "off" and owner.turn_detector is not None:
            assert owner.workers is not None
            self.turns = CloudTurns(
                CloudTurnRule.of(turn),
                owner.turn_detector,
                owner.workers,
                emit=self._emit,
                finalize=self._request_finalize,
            )
        self._run_task = asyncio.get_running_loop().create_task(self._run())

    # --- the stream's hooks --------------------------------------------------------------
    def _hear(self, audio: bytes) -> None:
        if self.turns is not None:
            self.turns.hear(audio)
        self._pending += audio
        overflow = len(self._pending) + len(self._replay) - self._owner.max_buffer_bytes
        if overflow > 0:
            self._forget_oldest(overflow)
        if len(self._pending) >= self._chunk_bytes:
            self._wake.set()

    def prefer_low_latency(self, on: bool) -> None:
        """Every frame its own message (``on``) or ``chunk_ms`` batches (see
        ``base.prefer_low_latency``)."""
        self._chunk_bytes = FRAME_BYTES if on else self._owner.chunk_bytes
        if self._pending and len(self._pending) >= self._chunk_bytes:
            self._wake.set()

    def _forget_oldest(self, count: int) -> None:
        """Bound what we hold: drop ``count`` bytes, oldest first. The resend copy goes first
        (a long utterance with no final yet only loses the oldest part of what a reconnect
        would resend); unsent audio only when the socket has been down too long. Either way
        the byte after the dropped ones becomes the start of the resend window."""
        from_replay = min(count, len(self._replay))
        del self._replay[:from_replay]
        from_pending = min(count - from_replay, len(self._pending))
        del self._pending[:from_pending]  # only when _replay is empty: it then starts at _pending[0]
        self._replay_start += (from_replay + from_pending) / _BYTES_PER_S

    def _flush(self) -> None:
        self._wake.set()  # the sender sends the rest, Finalize and CloseStream; the run then ends

    def _request_finalize(self) -> None:
        """Send ``Finalize`` after what was pushed so far (the turn detector ended the turn)."""
        self._finalize_due = True
        self._wake.set()

    async def _release(self) -> None:
        await cancel_and_wait(self._run_task)
        if self.turns is not None:
            await self.turns.aclose()

    # --- connection loop -----------------------------------------------------------------
    async def _run(self) -> None:
        failures = 0
        try:
            while True:
                error: Exception | None = None
                try:
                    finished = await self._session()
                except Exception as exc:  # OSError, timeout, websockets, SDK ApiError: dropped or refused
                    finished, error = False, exc
                if finished:
                    return
                failures += 1
                if failures > self._owner.max_reconnects:
                    raise ProviderError(
                        f"deepgram: giving up after {failures} attempts: {error!r}", provider="deepgram"
                    )
                self.reconnects += 1
                log.warning("deepgram socket lost, reconnecting", attempt=failures, error=repr(error))
                await asyncio.sleep(min(0.05 * 2**failures, 1.0))
                # Resend everything after the last final: it goes in front of the unsent audio.
                self._pending[:0] = self._replay
                self._replay.clear()
                self._conn_base = self._replay_start
        except ProviderError as exc:
            self._fail(exc)
        finally:
            self.ready.set()
            self._finish()

    async def _session(self) -> bool:
        """One socket's life. True when the stream ended normally, False/raise on a drop."""
        cm = self._owner.connect(self._language, self._keyterms)
        socket = await asyncio.wait_for(cm.__aenter__(), self._owner.connect_timeout_s)
        try:
            self.ready.set()
            async with asyncio.TaskGroup() as tg:
                sender_task = tg.create_task(self._send_loop(socket))
                done = await self._receive_loop(socket)
                if not done:
                    sender_task.cancel()
                    return False
            return True
        finally:
            with contextlib.suppress(Exception):
                await cm.__aexit__(None, None, None)

    async def _send_loop(self, socket: Any) -> None:
        """Sends what was pushed, ``KeepAlive`` after ``keepalive_s`` of sending nothing, and
        at the end the rest, ``Finalize`` and ``CloseStream``. It waits on ``_wake`` alone: the
        keepalive is one timer per ``keepalive_s`` (``_check_idle``), not a timeout per message
        (``asyncio.wait_for`` made a task for every 20 ms message)."""
        loop = asyncio.get_running_loop()
        self._sent_at = loop.time()
        self._keepalive_due = False
        self._idle_timer = loop.call_later(self._owner.keepalive_s, self._check_idle)
        try:
            while True:
                if self._pending:
                    chunk = bytes(self._pending)
                    self._pending.clear()
                    self._replay += chunk
                    self._sent_at = loop.time()
                    self._keepalive_due = False
                    await socket.send_media(chunk)
                elif self._finalize_due and not self._input_ended:
                    self._finalize_due = False
                    self._sent_at = loop.time()
                    await socket.send_finalize()
                elif self._input_ended:
                    await socket.send_finalize()
                    await socket.send_close_stream()
                    return
                elif self._keepalive_due:
                    self._keepalive_due = False
                    self._sent_at = loop.time()
                    await socket.send_keep_alive()
                else:
                    self._wake.clear()
                    await self._wake.wait()
        finally:
            if self._idle_timer is not None:
                self._idle_timer.cancel()

    def _check_idle(self) -> None:
        """The keepalive timer: wakes the sender when nothing went out for ``keepalive_s``,
        and comes back when the next keepalive could be due."""
        keepalive_s = self._owner.keepalive_s
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._sent_at
        if idle >= keepalive_s:
            self._keepalive_due = True
            self._wake.set()
            idle = 0.0
        self._idle_timer = loop.call_later(keepalive_s - idle, self._check_idle)

    async def _receive_loop(self, socket: Any) -> bool:
        async for message in socket:
            if isinstance(message, ListenV1Results):
                self._on_results(message)
            elif isinstance(message, ListenV1SpeechStarted):
                self._emit(SpeechStarted(at=self._conn_base + message.timestamp))
            elif isinstance(message, ListenV1UtteranceEnd):
                event = UtteranceEnd(last_word_end=self._conn_base + message.last_word_end)
                if self.turns is not None:
                    self.turns.utterance_end(event)
                else:
                    self._emit(event)
        # The server closed the socket: normal only if we asked for it.
        return self._input_ended and not self._pending

    def _on_results(self, msg: ListenV1Results) -> None:
        alt = msg.channel.alternatives[0] if msg.channel.alternatives else None
        text = alt.transcript.strip() if alt else ""
        start = self._conn_base + msg.start
        end = start + msg.duration
        if msg.is_final:
            # Everything up to the end of this final is settled: no need to resend it.
            settled = min(int((end - self._replay_start) * _BYTES_PER_S), len(self._replay))
            if settled > 0:
                del self._replay[:settled]
                self._replay_start += settled / _BYTES_PER_S
            final = Final(
                text,
                start,
                end,
                speech_final=bool(msg.speech_final),
                confidence=alt.confidence if alt else None,
                language=heard_language(alt),
                last_word_end=self._conn_base + alt.words[-1].end if alt and alt.words else None,
            )
            if self.turns is not None:
                self.turns.final(final, from_finalize=bool(msg.from_finalize))
            elif text:
                self._emit(final)
        elif text:
            if self.turns is not None:
                self.turns.interim(Interim(text, start, end))
            else:
                self._emit(Interim(text, start, end))


def heard_language(alt: Any) -> str | None:
    """The language of one result as Deepgram tagged it (``language=multi`` only): ``hi-en``
    when it holds both Hindi and English words, else its main language's base code
    (``en-IN`` -> ``en``); None when Deepgram said nothing (a monolingual stream, or audio
    that switches languages, where it may leave the tags out)."""
    if alt is None:
        return None
    counts: Counter[str] = Counter()
    for word in alt.words or ():
        if getattr(word, "language", None):
            counts[base_language(word.language)] += 1
    if not counts:
        for rank, tag in enumerate(alt.languages or ()):  # sorted by word count, descending
            counts[base_language(tag)] += len(alt.languages) - rank
    if not counts:
        return None
    if counts.get("hi") and counts.get("en"):
        return "hi-en"
    return counts.most_common(1)[0][0]
