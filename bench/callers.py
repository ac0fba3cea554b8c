"""Callers for the turn-taking benchmarks, rendered by the shipped piper voice.

Real speech, not word-coded audio: the Smart Turn detector scores prosody, so the callers
are the joe voice (``variation=False``: the same text always renders the same audio) at
8 kHz mu-law, with digital silence where they pause. Three kinds:

* ``complete``: whole sentences, then silence.
* ``paused``: the same kind of sentence rendered whole and cut after its middle word (word
  ends from whisper's word timestamps), a pause of 300-700 ms inserted there: mid-sentence
  prosody, then the rest.
* ``um``: a start trailing off into "um"/"uh", a pause of 300-700 ms, then the rest
  rendered on its own.

Each ``Utterance`` is 300 ms of silence, the speech, 2 s of silence; ``speech_end_ms`` is the
end of its last word (piper's near-silence trimmed). With ``words=True`` it also carries the
words as whisper times them on the finished utterance (``Word``: the audio clock, pauses
included; each word's edges pulled in to voiced audio, ``snap``): what a scripted Deepgram stand-in "hears" (``bench.voice_to_voice``).
``load_set`` renders once and keeps the set (audio and word timings) in a cache directory,
keyed on the texts and the voice's files.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from dialgraph.telephony.audio import audioop, silence
from dialgraph.telephony.speech.base import FRAME_BYTES, SAMPLE_RATE

COMPLETE = [
    "I'd like to book an appointment for Thursday at ten.",
    "Can you help me reschedule?",
    "Yes, that works for me.",
    "I need to cancel my appointment.",
    "Do you have anything open on Monday morning?",
    "That's all, thank you.",
    "Could I speak to a person please?",
    "My name is John Smith.",
    "What time do you close today?",
    "I'll take the three o'clock slot.",
    "I have a toothache and it hurts a lot.",
    "Is Doctor Miller available on Friday?",
    "No, I think that's everything.",
    "Sorry, can you repeat that?",
    "I want to pay my bill.",
    "Thanks, see you then.",
]
PAUSED = [
    "I want to change my booking to next week.",
    "I was wondering if you have anything open next week.",
    "Can I move my cleaning to Friday afternoon?",
    "I need to cancel my visit because I'm travelling.",
    "Please book it for the earliest slot you have.",
    "My number is five five five, zero one two three.",
    "I'd like to book an appointment for Thursday at ten.",
    "Do you have anything open on Monday morning?",
    "Could you tell me the price of a cleaning?",
    "I would like to see the same doctor as last time.",
    "Is there a slot with Doctor Miller on Friday?",
    "And also I wanted to ask about the parking.",
    "Can you send the confirmation to my email address?",
    "I think my appointment is on Wednesday at noon.",
    "Do you take walk in patients on the weekend?",
    "My daughter needs a checkup before school starts.",
    "We would prefer a morning slot if there is one.",
    "I called yesterday about a refund for my visit.",
    "How much does a filling cost without insurance?",
    "Could the doctor call me back this afternoon?",
]
UM = [
    ("I'd like to book an appointment for, um", "Thursday at ten."),
    ("My number is, uh", "five five five, zero one two three."),
    ("Can I move my appointment to, um", "next Monday?"),
    ("I was wondering if, um", "you have anything open next week."),
    ("The reason I'm calling is, uh", "my tooth hurts."),
    ("Do you have anything on, um", "Friday afternoon?"),
    ("I'd like to, uh", "cancel my visit."),
    ("Well, I was going to say, um", "that Tuesday works."),
    ("My email is, um", "john at example dot com."),
    ("I think it was, uh", "last Wednesday."),
    ("Could you check if, um", "Doctor Miller is in tomorrow?"),
    ("So I need, uh", "a new appointment."),
]
PAUSES_MS = (300, 350, 400, 450, 500, 550, 600, 650, 700)
LEAD_MS, TAIL_MS = 300, 2000
CACHE_VERSION = 2  # bump when the rendering changes: old cache files are then ignored


@dataclass(frozen=True, slots=True)
class Word:
    """One word as whisper heard it: ``text`` with its punctuation, times in seconds on the
    utterance's audio clock."""

    text: str
    start: float
    end: float


@dataclass
class Utterance:
    category: str
    text: str
    audio: bytes  # lead silence, speech (with its pause), tail silence
    speech_end_ms: int  # end of the last word on the audio clock
    pause_ms: int = 0
    words: tuple[Word, ...] = ()  # with render_set(words=True)

    @property
    def speech(self) -> bytes:
        """The speech alone: from the end of the lead silence to the end of the last word."""
        return self.audio[LEAD_MS * SAMPLE_RATE // 1000 : self.speech_end_ms * SAMPLE_RATE // 1000]


def _quiet(frame: bytes) -> bool:
    return audioop.rms(audioop.ulaw2lin(frame, 2), 2) < 100


def trim(audio: bytes, *, head: bool = False) -> bytes:
    """Drop piper's near-silence at the end (``head``: at the start too), in whole frames."""
    end = len(audio) - len(audio) % FRAME_BYTES
    while end > FRAME_BYTES and _quiet(audio[end - FRAME_BYTES : end]):
        end -= FRAME_BYTES
    start = 0
    while head and start < end - FRAME_BYTES and _quiet(audio[start : start + FRAME_BYTES]):
        start += FRAME_BYTES
    return audio[start:end]


def word_timings(whisper: Any, audio: bytes) -> list[Word]:
    """Whisper's words (with word timestamps) in ``audio`` (8 kHz mu-law)."""
    pcm = np.frombuffer(audioop.ulaw2lin(audio, 2), dtype="<i2").astype(np.float32) / 32768
    segments, _ = whisper.transcribe(
        soxr.resample(pcm, SAMPLE_RATE, 16_000), language="en", word_timestamps=True, beam_size=1, temperature=0.0
    )
    return [Word(w.word.strip(), float(w.start), float(w.end)) for s in segments for w in s.words]


def snap(words: list[Word], audio: bytes) -> list[Word]:
    """Whisper stretches a word over the pause after it (and drops "um"): pull each word's
    edges in to the audio's voiced frames, so a pause is silence in the timings too."""
    quiet = [_quiet(audio[i : i + FRAME_BYTES]) for i in range(0, len(audio) - FRAME_BYTES + 1, FRAME_BYTES)]
    step = FRAME_BYTES / SAMPLE_RATE
    out = []
    for w in words:
        first, last = int(w.start / step), min(len(quiet), round(w.end / step)) - 1
        while first < last and quiet[first]:
            first += 1
        while last > first and quiet[last]:
            last -= 1
        out.append(Word(w.text, round(first * step, 3), round((last + 1) * step, 3)) if first < last else w)
    return out


def _utterance(category: str, text: str, pieces: list[bytes], pause_ms: int = 0) -> Utterance:
    speech = silence(pause_ms).join(pieces)
    ms = len(speech) * 1000 // SAMPLE_RATE
    return Utterance(category, text, silence(LEAD_MS) + speech + silence(TAIL_MS), LEAD_MS + ms, pause_ms)


def render_set(voice: Any, whisper: Any, *, words: bool = False) -> list[Utterance]:
    """Every caller of the set; ``words``: with whisper's word timings (one decode each)."""
    from dialgraph.telephony.speech.offline_tts import render_piper

    def render(text: str) -> bytes:
        return render_piper(voice, text, variation=False)

    out = [_utterance("complete", t, [trim(render(t))]) for t in COMPLETE]
    for i, text in enumerate(PAUSED):
        audio = trim(render(text))
        ends = [w.end for w in word_timings(whisper, audio)]
        k = len(ends) // 2 - 1  # after the middle word: words on either side
        cut = int(ends[k] * SAMPLE_RATE) // FRAME_BYTES * FRAME_BYTES
        first, rest = trim(audio[:cut]), trim(audio[cut:], head=True)
        pause = PAUSES_MS[i % len(PAUSES_MS)]
        out.append(_utterance("paused", f"{text} [pause after word {k + 1}]", [first, rest], pause))
    for i, (opening, ending) in enumerate(UM):
        pause = PAUSES_MS[(i * 2 + 1) % len(PAUSES_MS)]
        pieces = [trim(render(opening)), trim(render(ending), head=True)]
        out.append(_utterance("um", f"{opening} ... {ending}", pieces, pause))
    if words:
        lead = LEAD_MS / 1000
        for u in out:
            heard = snap(word_timings(whisper, u.speech), u.speech)
            u.words = tuple(Word(w.text, w.start + lead, w.end + lead) for w in heard)
    return out


def _cache_key() -> str:
    from dialgraph.telephony.speech.offline_tts import joe_voice_dir

    voice = sorted((p.name, p.stat().st_size) for p in Path(joe_voice_dir()).iterdir() if p.is_file())
    text = json.dumps([CACHE_VERSION, COMPLETE, PAUSED, UM, PAUSES_MS, LEAD_MS, TAIL_MS, voice])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_set(cache_dir: Path) -> list[Utterance]:
    """``render_set(words=True)``, from ``cache_dir`` when it was rendered before (piper
    and whisper are then not even loaded)."""
    path = cache_dir / f"callers-{_cache_key()}.json"
    if path.exists():
        rows = json.loads(path.read_text())
        return [
            Utterance(
                r["category"],
                r["text"],
                base64.b64decode(r["audio"]),
                r["speech_end_ms"],
                r["pause_ms"],
                tuple(Word(*w) for w in r["words"]),
            )
            for r in rows
        ]
    from dialgraph.telephony.speech.offline_asr import load_whisper
    from dialgraph.telephony.speech.offline_tts import load_piper

    utterances = render_set(load_piper(), load_whisper(workers=1), words=True)
    rows = [
        {
            "category": u.category,
            "text": u.text,
            "audio": base64.b64encode(u.audio).decode(),
            "speech_end_ms": u.speech_end_ms,
            "pause_ms": u.pause_ms,
            "words": [[w.text, w.start, w.end] for w in u.words],
        }
        for u in utterances
    ]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows))
    tmp.replace(path)
    return utterances
