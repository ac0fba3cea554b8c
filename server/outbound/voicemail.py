"""The message an outbound call leaves on an answering machine, in the flow's own voice.

When async AMD says a machine took the call (after its beep), the AMD webhook redirects
the live call to ``<Play>`` of ``/twilio/voicemail?sid=...`` then ``<Hangup/>``; that
endpoint renders the flow's message with the flow's TTS as an 8 kHz WAV. The rendered
audio is kept a few minutes per call, so the webhook can render it before redirecting (a
TTS failure then falls back to ``<Say>``) and Twilio's fetch is served at once.

The message is spoken in the flow's language with the flow's voice settings (the
synthesizer resolves model, ``language_code`` and voice from them, as in a call); a Hindi
or Hinglish flow without its own ``voicemail`` text gets the default one in Hindi, in the
flow's script.
"""

from __future__ import annotations

import io
import time
import wave
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from typing import Any

from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.telephony.audio import SAMPLE_RATE, ulaw_to_pcm16
from dialgraph.telephony.speech.base import SpeechSynthesizer

DEFAULT_MESSAGE = (
    "Hello{name}, this is {company}{about}. Sorry we missed you. "
    "Please call us back when it suits you. Thank you, and goodbye."
)
# hi and hi-en flows: (message, how the purpose is put in), by script
HINDI_MESSAGES = {
    "roman": (
        "Namaste{name}, yeh {company} ki taraf se call hai{about}. Aapse baat nahi ho payi. "
        "Jab aapko suvidha ho, humein call back kijiye. Dhanyavaad.",
        ", {purpose} ke baare mein",
    ),
    "devanagari": (
        "नमस्ते{name}, यह {company} की तरफ़ से कॉल है{about}। आपसे बात नहीं हो पाई। "
        "जब आपको सुविधा हो, हमें वापस कॉल कीजिए। धन्यवाद।",
        ", {purpose} के बारे में",
    ),
}
CACHE_S = 300.0
CACHE_SIZE = 256


def message(flow: FlowSettings, context: Mapping[str, Any] | None) -> str:
    """The flow's voicemail text for this contact (``{name}``, ``{company}``, ``{purpose}``)."""
    ctx = context or {}
    name = str(ctx.get("name") or "").strip()
    purpose = str(ctx.get("purpose") or "").strip()
    if flow.voicemail:
        text = flow.voicemail
        for key, value in (("name", name), ("company", flow.company), ("purpose", purpose)):
            text = text.replace("{" + key + "}", value)
        return " ".join(text.split())
    first = f" {name.split()[0]}" if name else ""
    if flow.language in ("hi", "hi-en"):
        template, about = HINDI_MESSAGES[flow.script]
        return template.format(name=first, company=flow.company, about=about.format(purpose=purpose) if purpose else "")
    return DEFAULT_MESSAGE.format(
        name=first, company=flow.company, about=f", calling about {purpose}" if purpose else ""
    )


async def _one(text: str) -> AsyncIterator[str]:
    yield text


async def render_wav(synthesizer: SpeechSynthesizer, flow: FlowSettings, text: str) -> bytes:
    """``text`` spoken by the flow's voice, as a 16-bit 8 kHz mono WAV."""
    ulaw = bytearray()
    async for chunk in synthesizer.synthesize(
        _one(text), voice=flow.voice, language=flow.language, model=flow.tts_model
    ):
        ulaw += chunk.audio
    if not ulaw:
        raise ValueError("the synthesizer produced no audio")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(ulaw_to_pcm16(bytes(ulaw)))
    return out.getvalue()


class VoicemailCache:
    """Rendered messages by CallSid, for a few minutes (in process: any instance can render
    again from the call row if Twilio's fetch lands elsewhere)."""

    def __init__(self, *, ttl_s: float = CACHE_S, size: int = CACHE_SIZE) -> None:
        self._items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._ttl_s = ttl_s
        self._size = size

    def get(self, sid: str) -> bytes | None:
        item = self._items.get(sid)
        if item is None or item[0] < time.monotonic():
            self._items.pop(sid, None)
            return None
        return item[1]

    def put(self, sid: str, audio: bytes) -> None:
        self._items[sid] = (time.monotonic() + self._ttl_s, audio)
        self._items.move_to_end(sid)
        while len(self._items) > self._size:
            self._items.popitem(last=False)
