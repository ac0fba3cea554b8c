"""Local stand-ins for the cloud speech vendors, speaking their wire protocols on loopback.

``DeepgramFake`` serves Deepgram's live ``/v1/listen`` WebSocket and ``ElevenLabsFake``
ElevenLabs' multi-context WebSocket and HTTP streaming, so the real clients (our own and the
vendors' SDKs) run unchanged against them: in tests, and in benchmarks that measure our side
of the cloud path without the network.
"""

from dialgraph.telephony.simulator.vendors.deepgram import DeepgramFake, ListenConnection, word_audio
from dialgraph.telephony.simulator.vendors.elevenlabs import ElevenLabsFake, SocketRecord, fake_audio

__all__ = ["DeepgramFake", "ElevenLabsFake", "ListenConnection", "SocketRecord", "fake_audio", "word_audio"]
