"""The languages a flow speaks, and which one a caller's words are in (pure, no I/O).

A flow's ``language`` is one of:

- ``en``: English;
- ``en-IN``: Indian English (English replies; ASR tuned for Indian accents where the vendor
  has it);
- ``hi``: Hindi (replies in Hindi, Roman script unless the flow asks for Devanagari);
- ``hi-en``: Hindi-English code-switching, "Hinglish" ("kal subah 10 baje ka appointment
  chahiye"): the agent answers in the caller's mix.

``detect`` reads one turn's text: Devanagari script is Hindi; romanised Hindi words
(as ASR writes them: "haan", "mujhe", "chahiye", "baje") mixed with English are
``hi-en``; anything else is English. ``reply_language`` is what the agent answers in, given
the flow's language and the caller's latest turn: an ``en-IN``/``hi-en`` flow follows a
caller who switches; an ``en`` flow always answers in English.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

FlowLanguage = Literal["en", "en-IN", "hi", "hi-en"]
LANGUAGES: tuple[str, ...] = get_args(FlowLanguage)
Spoken = Literal["en", "hi-en", "hi"]  # what a turn is in (detect's answer)

# Romanised Hindi as ASR and callers write it. Words that are also common English words
# ("do", "to", "main", "me", "par", "so", "hi", "the", "are", "hmm") are left out: they prove nothing.
_HINDI_WORDS = """
    haan haanji han ji jee nahi nahin nai na mat theek thik bilkul achha accha acha achchha
    arey arre yaar ruko rukiye ruk suniye suno bhai bhaiya didi sahab
    hai hain tha thi hoon hun hu ho hoga hogi hoge raha rahi rahe
    ka ki ke ko se mein mai mujhe mera meri mere hum humko hamara hamari aap aapka aapki aapke aapko
    tum tumhara uska uski unka unki woh wo yeh ye isko usko kisi kuch koi sab
    kya kab kaise kaun kahan kidhar kyun kyu kitna kitne kitni konsa kaunsa
    chahiye chahie chaiye chahta chahti chahte karna karni karne karo kariye kijiye kijie karwana karwao
    karao karaiye kara kar diya diye dijiye dena dedo batao bataiye boliye bolo baat
    badalna badlo badal badalni hatao hata raddh radd bandh
    aaj kal parson parso abhi baad pehle jaldi subah sawere dopahar shaam sham raat
    baje baja bajke bajkar saade sade sawa paune pone dhai dedh derh ghanta
    somvar mangalvar budhvar guruvar brihaspativar veervar shukravar shanivar ravivar itvaar itwar
    naam insaan aadmi koi wala wali wale liye lie saath sath
    dhanyavaad dhanyawad shukriya namaste namaskar alvida
    agle agla agli pichle mahine mahina hafte hafta saal tak karunga karungi karenge karega karegi
    karta karti karte chahenge lena waala waale hazaar hazar dukaan paas bhi bas dekh dekhta dekhti dekhte
    sakte sakta sakti milega milna chalega karke lijiye dekhiye batana poochna puchna jaanna humein hamein
    hume hamare humare apne apni apna unko zaroorat jaise mahino hafton
"""
HINDI_WORDS = frozenset(_HINDI_WORDS.split())
_DEVANAGARI = re.compile(r"[\u0900-\u097F]")
_WORD = re.compile(r"[a-z']+")


def base(language: str) -> str:
    """ "hi-en" -> "hi", "en-IN" -> "en"."""
    return language.split("-")[0].lower()


def detect(text: str) -> Spoken:
    """What one turn's words are in: ``hi`` (Devanagari), ``hi-en`` (romanised Hindi words,
    alone or mixed with English) or ``en``."""
    letters = [c for c in text if c.isalpha()]
    if letters and sum(1 for c in letters if _DEVANAGARI.match(c)) * 2 >= len(letters):
        return "hi"
    words = _WORD.findall(text.lower())
    hindi = sum(1 for w in words if w in HINDI_WORDS)
    if hindi and (hindi >= 2 or hindi * 4 >= len(words)):
        return "hi-en"
    return "en"


def reply_language(flow: str, caller: Spoken | None) -> Spoken:
    """The language of the agent's reply on a flow in ``flow`` after the caller spoke in
    ``caller`` (None: the caller has not spoken yet, e.g. the greeting)."""
    if flow == "en":
        return "en"
    if flow == "hi":
        return "hi"
    if flow == "hi-en":
        return "en" if caller == "en" else "hi-en"
    return caller if caller in ("hi-en", "hi") else "en"  # en-IN follows a caller who switches


# --- the vendors' names for them -----------------------------------------------------------------
def deepgram_language(language: str) -> str:
    """Deepgram's ``language`` query parameter (nova-3): ``multi`` is its code-switching mode."""
    return {"hi-en": "multi", "hi": "hi", "en-IN": "en-IN"}.get(language, base(language) or "en")


def elevenlabs_language(language: str) -> str | None:
    """ElevenLabs' ``language_code`` (ISO 639-1, multilingual v2.5 models only); None: the
    model's default (English)."""
    b = base(language)
    return None if b == "en" else b


def twilio_say_language(language: str) -> str:
    """Twilio ``<Say language>``."""
    return {"en-IN": "en-IN", "hi": "hi-IN", "hi-en": "hi-IN"}.get(language, "en-US")
