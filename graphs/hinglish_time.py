"""Hinglish dates and times: romanised Hindi as ASR writes it ("kal subah saade das baje",
"guruvar ko 11 bajkar 30 minute") and Hindi in Devanagari, rewritten to the English forms
``spoken_time`` reads (pure). ``HI_TRIGGER`` says whether a turn has any such word at all;
``hindi_numbers`` turns Hindi number words into digits where a time word makes them a time;
``hinglish_to_english`` then rewrites the clock, day and period words."""

from __future__ import annotations

import re
from collections.abc import Callable

from dialgraph.graphs.time_words import MONTH_RE, QTY_H, WEEKDAY_NAMES, ordinal_suffix
from dialgraph.server.core.language import HINDI_WORDS

_HI_HOURS = {
    "ek": 1, "do": 2, "teen": 3, "tin": 3, "char": 4, "chaar": 4, "paanch": 5, "panch": 5, "paach": 5,
    "chhe": 6, "chhah": 6, "chah": 6, "chheh": 6, "cheh": 6, "chhai": 6, "saat": 7, "aath": 8, "aat": 8, "nau": 9,
    "das": 10, "dus": 10, "gyarah": 11, "gyara": 11, "gyaarah": 11, "gyaara": 11, "igyarah": 11, "barah": 12,
    "bara": 12, "baarah": 12, "baara": 12,
}  # fmt: skip
_HI_MINUTES = {
    "paanch": 5, "panch": 5, "das": 10, "dus": 10, "pandrah": 15, "pandra": 15, "bees": 20, "bis": 20, "pachees": 25,
    "pachis": 25, "pachchis": 25, "tees": 30, "tis": 30, "paintis": 35, "paintees": 35, "chalis": 40, "chaalis": 40,
    "chalees": 40, "paintalis": 45, "paintalees": 45, "pachas": 50, "pachaas": 50, "pachpan": 55,
}  # fmt: skip
_HI_NUM = "|".join(sorted(_HI_HOURS, key=len, reverse=True))
_HI_NUM_NOT_DO = "|".join(w for w in sorted(_HI_HOURS, key=len, reverse=True) if w != "do")  # "do" is English too
_HI_MIN = "|".join(sorted(_HI_MINUTES, key=len, reverse=True))
BAJE = r"(?:baje|bajey|baaje|baja|bje|bajkar|bajke|baj\s+kar|baj\s+ke|baj)"
SAADE = r"(?:saade|saadhe|sade|sadhe|saadey)"
SAWA = r"(?:sawa|sava|savaa|sawaa)"
PAUNE = r"(?:paune|pone|paunay|pauney)"
_HI_PERIODS = (
    (r"subah|subha|subeh|suba|sawere|savere|sawera|savera|sabere|prataha", "morning"),
    (r"dopahar|dopehar|dophar|dopahr|dupahar|dupehar|dopaher", "afternoon"),
    (r"shaam|shyaam|saam", "evening"),
    (r"raat|raatko|rat ko", "night"),
)
_HI_PERIOD_WORDS = "|".join(p for p, _ in _HI_PERIODS) + "|sham"
_HI_CUE = re.compile(rf"{_HI_PERIOD_WORDS}|parson|parso|parsoon|parsun|parsho|tarikh|taarikh|tareekh|tarik")
_HI_WEEKDAYS = tuple(
    (re.compile(rf"\b(?:{long})\b|\b(?:{short})\b(?=\s+(?:ko|ke din)\b)"), english)
    for long, short, english in (
        (r"som(?:v|w)aa?r|somaar", "som", "monday"),
        (r"mangal(?:v|w)aa?r", "mangal", "tuesday"),
        (r"budh(?:v|w)aa?r", "budh", "wednesday"),
        (r"guru(?:v|w)aa?r|brihaspati(?:v|w)aa?r|veer(?:v|w)aa?r|vir(?:v|w)aa?r", "guru|brihaspat", "thursday"),
        (r"shukra?(?:v|w)aa?r", "shukra", "friday"),
        (r"shani(?:v|w)aa?r|sani(?:v|w)aa?r", "shani", "saturday"),
        (r"ravi(?:v|w)aa?r|it(?:v|w)aa?r|et(?:v|w)aa?r", "ravi", "sunday"),
    )
)


_HI_NUM_CUED = (
    re.compile(rf"\b()({_HI_NUM})(?=\s+(?:{BAJE}|tarikh|taarikh|tareekh|{MONTH_RE})\b)"),
    re.compile(rf"\b((?:{SAADE}|{SAWA}|{PAUNE})\s+)({_HI_NUM})\b"),
    # after a period word, but "subah do" is not a time ("do" is English too)
    re.compile(rf"\b((?:{_HI_PERIOD_WORDS})\s+(?:ko\s+|ke\s+)?)({_HI_NUM_NOT_DO})\b(?!\s+{QTY_H}\b)"),
)
_HI_MIN_CUED = re.compile(rf"\b(\d{{1,2}}\s+{BAJE}\s+)({_HI_MIN})(?=\s+(?:minute|minutes|min|mins|mint|minat)\b)")
# Any Hindi date or time word at all: an English turn skips the Hinglish rules (speed)
HI_TRIGGER = re.compile(
    rf"\b(?:{_HI_NUM}|{BAJE}|{SAADE}|{SAWA}|{PAUNE}|dhai|dhaai|dhaee|dhayi|dhaiy|dedh|derh|dedth|dhedh"
    rf"|{_HI_PERIOD_WORDS}|aaj|kal|pars\w*|agl\w*|aagle|agale|aane|haft\w*|saptah|mahin\w*|tarikh|taarikh|tareekh|tarik"
    r"|som\w*|mangal\w*|budh\w*|guru\w*|brihaspat\w*|veer\w*|vir\w*|shukr\w*|shani\w*|sani\w*|ravi\w*|it[vw]\w*"
    r"|et[vw]\w*)\b"
)


def hindi_numbers(text: str) -> str:
    """Hindi number words to digits where a time word makes them a time: "das baje",
    "saade das", "subah das", "bajkar tees minute", "aath december", "teen tarikh"."""
    for pattern in _HI_NUM_CUED:
        text = pattern.sub(lambda m: f"{m.group(1)}{_HI_HOURS[m.group(2)]}", text)
    return _HI_MIN_CUED.sub(lambda m: f"{m.group(1)}{_HI_MINUTES[m.group(2)]}", text)


def _hm(hour: int, minute: int, whole: str) -> str:
    """ "H:MM", or ``whole`` (the words as said) when that is no time of day."""
    return f"{hour}:{minute:02d}" if 0 <= hour <= 23 and 0 <= minute <= 59 else whole


def _fraction(minute: int, back: int) -> Callable[[re.Match[str]], str]:
    def repl(m: re.Match[str]) -> str:
        hour = int(m.group(1))
        return _hm((hour - back) or 12, minute, m.group(0)) if 1 <= hour <= 12 else m.group(0)

    return repl


_NOT_QTY = rf"(?!\s+{QTY_H}\b)"
_HI_CLOCK: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # "saade das (baje)" 10:30, "sawa 11" 11:15, "paune 10" 9:45; not "saade teen lakh"
    *(
        (re.compile(rf"\b{words}\s+(\d{{1,2}})\b(?![\d:.]){_NOT_QTY}(?:\s+{BAJE}\b)*"), _fraction(minute, back))
        for words, minute, back in ((SAADE, 30, 0), (SAWA, 15, 0), (PAUNE, 45, 1))
    ),
    (re.compile(rf"\b(?:dhai|dhaai|dhaee|dhayi|dhaiy)\b{_NOT_QTY}(?:\s+{BAJE}\b)*"), "2:30"),
    (re.compile(rf"\b(?:dedh|derh|dedth|dhedh)\b{_NOT_QTY}(?:\s+{BAJE}\b)*"), "1:30"),
    # "11 bajkar 30 minute", "11 baje 30 min", "11 bajke 30"
    (
        re.compile(rf"(?<![\d:.])\b(\d{{1,2}})\s+{BAJE}\s+([0-5]?\d)\s*(?:minute|minutes|min|mins|mint|minat)\b"),
        lambda m: _hm(int(m.group(1)), int(m.group(2)), m.group(0)),
    ),
    (
        re.compile(r"(?<![\d:.])\b(\d{1,2})\s+(?:bajkar|bajke|baj\s+kar|baj\s+ke)\s+([0-5]\d)\b(?![\d:.])"),
        lambda m: _hm(int(m.group(1)), int(m.group(2)), m.group(0)),
    ),
    (re.compile(rf"\b(\d{{1,2}}:\d\d)(?:\s+{BAJE}\b)+"), r"\1"),
    (re.compile(rf"(?<![\d:.])\b(\d{{1,2}})(?:\s+{BAJE}\b)+"), lambda m: _hm(int(m.group(1)), 0, m.group(0))),
    (
        re.compile(r"(?<![\d:.])\b(\d{1,2})\s+(?:tarikh|taarikh|tareekh|tarik)\b"),
        lambda m: ordinal_suffix(int(m.group(1))),
    ),
)
_HI_WORDS_EN = {
    **{w: en for words, en in _HI_PERIODS for w in words.split("|")},
    "aaj": "today",
    "kal": "tomorrow",  # booking: "kal" is the future
    **dict.fromkeys(("parson", "parso", "parsoon", "parsun", "parsho"), "day after tomorrow"),
    **dict.fromkeys(("agle", "agla", "agli", "aagle", "agale", "aane wale", "aane wala", "aane wali"), "next"),
    **dict.fromkeys(("hafte", "hafta", "haftay", "saptah"), "week"),
    **dict.fromkeys(("mahine", "mahina"), "month"),
}
_HI_WORD_RE = re.compile(rf"\b(?:{'|'.join(sorted(_HI_WORDS_EN, key=len, reverse=True))})\b")
_THIS_WEEKDAY = re.compile(rf"\bis\s+(?=(?:{'|'.join(WEEKDAY_NAMES)}|week)\b)")


def hinglish_to_english(text: str, hinglish: bool) -> str:
    """Hinglish date and time words (their numbers already digits) to the English forms
    ``parse_when`` reads."""
    for pattern, repl in _HI_CLOCK:
        text = pattern.sub(repl, text)
    text = _HI_WORD_RE.sub(lambda m: _HI_WORDS_EN[m.group(0)], text)
    for weekday, english in _HI_WEEKDAYS:
        text = weekday.sub(english, text)
    if hinglish:  # "sham" (also English) is evening and "is friday" this Friday only in a Hinglish turn
        text = _THIS_WEEKDAY.sub("this ", re.sub(r"\bsham\b", "evening", text))
    return text


# Hindi in Devanagari (Deepgram's ``hi`` output) to the romanised words the rules read: the
# date, time, yes/no and request vocabulary only (names and other words stay as they are).
_DEVANAGARI_PAIRS = """
    कल=kal आज=aaj परसों=parson परसो=parso सुबह=subah सवेरे=sawere दोपहर=dopahar शाम=shaam रात=raat
    बजे=baje बजकर=bajkar बज=baj साढ़े=saade साढे=saade सवा=sawa पौने=paune ढाई=dhai डेढ़=dedh डेढ=dedh मिनट=minute
    सोमवार=somvar मंगलवार=mangalvar बुधवार=budhvar गुरुवार=guruvar बृहस्पतिवार=brihaspativar शुक्रवार=shukravar
    शनिवार=shanivar रविवार=ravivar इतवार=itvaar मंडे=monday ट्यूज़डे=tuesday ट्यूसडे=tuesday वेडनेसडे=wednesday
    थर्सडे=thursday फ्राइडे=friday सैटरडे=saturday संडे=sunday अगले=agle अगला=agla अगली=agli हफ्ते=hafte हफ़्ते=hafte
    महीने=mahine तारीख=tarikh तारीख़=tarikh जनवरी=january फरवरी=february फ़रवरी=february मार्च=march अप्रैल=april
    मई=may जून=june जुलाई=july अगस्त=august सितंबर=september सितम्बर=september अक्टूबर=october अक्तूबर=october
    नवंबर=november नवम्बर=november दिसंबर=december दिसम्बर=december
    एक=ek दो=do तीन=teen चार=char पांच=paanch पाँच=paanch छह=chhah छः=chhah सात=saat आठ=aath नौ=nau दस=das
    ग्यारह=gyarah बारह=barah पंद्रह=pandrah बीस=bees तीस=tees पैंतालीस=paintalis
    को=ko के=ke का=ka की=ki से=se है=hai हैं=hain हाँ=haan हां=haan जी=ji नहीं=nahi नही=nahi ठीक=theek
    बिल्कुल=bilkul बिलकुल=bilkul ज़रूर=zaroor जरूर=zaroor चलेगा=chalega सही=sahi मत=mat करो=karo कर=kar
    दीजिए=dijiye दीजिये=dijiye करना=karna करनी=karni चाहिए=chahiye चाहिये=chahiye मुझे=mujhe मेरा=mera मेरी=meri
    नाम=naam अपॉइंटमेंट=appointment अपॉइंटमेन्ट=appointment अपोइंटमेंट=appointment बुक=book कैंसल=cancel
    कैन्सल=cancel रद्द=radd बदलना=badalna बदल=badal बात=baat किसी=kisi इंसान=insaan मैसेज=message संदेश=sandesh
    धन्यवाद=dhanyavaad शुक्रिया=shukriya बस=bas इतना=itna ही=hi क्या=kya कब=kab कैसे=kaise कितना=kitna
    कितनी=kitni कितने=kitne कहाँ=kahan कहां=kahan बाय=bye ओके=ok
"""
_DEVANAGARI_WORDS: dict[str, str] = {k: v for k, _, v in (pair.partition("=") for pair in _DEVANAGARI_PAIRS.split())}
_DEVANAGARI_DIGITS = str.maketrans("०१२३४५६७८९", "0123456789")
DEVANAGARI_RE = re.compile(r"[\u0900-\u097F]+")


def romanise(text: str) -> str:
    """Devanagari digits and the known Devanagari words to Roman script."""
    text = text.translate(_DEVANAGARI_DIGITS).replace("।", " ")
    return DEVANAGARI_RE.sub(lambda m: _DEVANAGARI_WORDS.get(m.group(0), m.group(0)), text)


# Words that show a turn is Hinglish, so that "sham" is evening and "is friday" this Friday
# ("sham" itself is also English, and proves nothing).
HINGLISH_MARKERS = HINDI_WORDS - {"sham"}


def is_hindi_cue(word: str) -> bool:
    """A Hindi word that makes the numbers after it a time: "subah", "somvar", "tarikh"."""
    return any(pattern.fullmatch(word) for pattern, _ in _HI_WEEKDAYS) or _HI_CUE.fullmatch(word) is not None
