"""Local stand-ins for the cloud speech vendors, speaking their wire protocols on loopback.

``DeepgramFake`` serves Deepgram's live ``/v1/listen`` WebSocket and ``ElevenLabsFake``
ElevenLabs' multi-context WebSocket and HTTP streaming, so the real clients (our own and the
vendors' SDKs) run unchanged against them: in tests, and in benchmarks that measure our side
of the cloud path without the network. Their timing profiles (``DEEPGRAM_TIMING``,
``ELEVENLABS_TIMING``) add the vendors' published delays for the whole-call benchmark;
the default adds none.
"""

from dialgraph.telephony.simulator.vendors.deepgram import (
    DEEPGRAM_TIMING,
    DeepgramFake,
    DeepgramTiming,
    ListenConnection,
    word_audio,
)
from dialgraph.telephony.simulator.vendors.elevenlabs import (
    ELEVENLABS_TIMING,
    ElevenLabsFake,
    ElevenLabsTiming,
    SocketRecord,
    fake_audio,
)

__all__ = [
    "DEEPGRAM_TIMING",
    "ELEVENLABS_TIMING",
    "DeepgramFake",
    "DeepgramTiming",
    "ElevenLabsFake",
    "ElevenLabsTiming",
    "ListenConnection",
    "SocketRecord",
    "fake_audio",
    "word_audio",
]
