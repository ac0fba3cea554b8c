"""Answers from a small question/answer knowledge base, ranked with BM25 (rank-bm25).

The file (YAML or JSON) is a list of ``{question, answer, keywords?}`` entries (or a
mapping with such a list under ``entries``). Each entry is indexed on its question,
keywords and answer, the question counted twice. BM25 ranks, with Lucene's always-positive
idf (rank-bm25's Okapi idf goes negative for words in over half the entries, which breaks
small files). The best entry is accepted when the query shares a content word with its
question or keywords and either its score reaches ``min_score`` or those shared words
carry at least ``min_coverage`` of the query's idf weight (this keeps a one-entry file
usable); otherwise the tool says it does not know.

Why BM25: the entries are short and few, callers' words overlap the questions' words, and
it needs no model download; rank-bm25 is small, pure Python and widely used.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from langchain_core.tools import BaseTool, tool
from langgraph.prebuilt import ToolRuntime
from rank_bm25 import BM25Okapi

from dialgraph.server.core.context import CallContext
from dialgraph.tools.runtime import speak_errors, style_of
from dialgraph.tools.speech_format import speak_money

DEFAULT_KNOWLEDGE_FILE = Path(__file__).with_name("data") / "support_faq.yaml"
MIN_SCORE = 1.5
MIN_COVERAGE = 0.5
DONT_KNOW = "I don't know the answer to that. Offer to take a message or transfer the caller to someone who can help."
DONT_KNOW_HI = (
    "Iska jawab abhi mere paas nahi hai. Offer to take a message or transfer the caller to someone who can help."
)

_STOPWORD_TEXT = """a an the and or but if then so of to in on at by for with from about as into over under up
    down out off i me my mine we us our you your yours he she it its they them their this that these those there here
    is are was were be been being am do does did done have has had having can could will would shall should may might
    must what which who whom whose when where why how please tell know like just also any some get got want need okay
    ok hi hello yes no not"""
# Hinglish callers ask in romanised Hindi with English nouns ("aapka clinic kitne baje khulta
# hai"): Hindi function words carry nothing, and a few content words mean an English one.
_HINDI_STOPWORD_TEXT = """aap aapka aapki aapke aapko hum hamara hamari mera meri mere mujhe main mai hai hain tha thi
    ho hota hoti hote ka ki ke ko se mein me par pe kya kab kaise kahan kaun kitna kitne kitni konsa kaunsa koi kuch
    bhi toh to yeh ye woh wo ji haan nahi na hoga hogi karna karni karne karte karti kar sakte sakta sakti chahiye
    batao bataiye boliye please bhai sir madam accha achha theek liye wala wali wale"""
_HINGLISH_TERMS = {
    "khulta": "open", "khulte": "open", "khulega": "open", "band": "close", "timing": "hours", "timings": "hours",
    "samay": "time", "ghante": "hours", "pata": "address", "address": "address", "kahan": "location", "jagah": "location",
    "gaadi": "car", "gadi": "car", "bima": "insurance", "paisa": "pay", "paise": "pay", "bhugtan": "payment",
    "kisht": "instalments", "kishton": "instalments", "emi": "instalments", "galat": "wrong", "zyada": "overcharged",
    "dard": "pain", "sujan": "swelling", "bacche": "children", "baccha": "children", "bachche": "children",
    "bachon": "children", "bacchon": "children", "bachchon": "children", "naye": "new", "marij": "patients", "mareez": "patients", "safed": "whitening",
    "daant": "teeth", "dant": "teeth", "daanton": "teeth",
}  # fmt: skip
_STOPWORDS = frozenset(_STOPWORD_TEXT.split()) | frozenset(_HINDI_STOPWORD_TEXT.split())
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class Entry:
    question: str
    answer: str
    keywords: str = ""


@dataclass(frozen=True, slots=True)
class Match:
    entry: Entry
    score: float


def stem(word: str) -> str:
    """A light English stemmer: enough to make "hours"/"hour", "parking"/"park" meet."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in ("ments", "ment", "ing", "ed"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def tokens(text: str) -> list[str]:
    words = (_HINGLISH_TERMS.get(w, w) for w in _WORD.findall(text.lower().replace("'", "")))
    return [stem(w) for w in words if w not in _STOPWORDS]


class _LuceneIdfBM25(BM25Okapi):
    """BM25Okapi scoring with idf = ln(1 + (N - n + 0.5) / (n + 0.5)), never negative."""

    def _calc_idf(self, nd: dict[str, int]) -> None:
        for word, freq in nd.items():
            self.idf[word] = math.log(1 + (self.corpus_size - freq + 0.5) / (freq + 0.5))
        self.average_idf = sum(self.idf.values()) / max(len(self.idf), 1)


class KnowledgeBase:
    """BM25 over question/answer entries, with an acceptance threshold."""

    def __init__(
        self, entries: Sequence[Entry], *, min_score: float = MIN_SCORE, min_coverage: float = MIN_COVERAGE
    ) -> None:
        if not entries:
            raise ValueError("a knowledge base needs at least one entry")
        self.entries = list(entries)
        self.min_score = min_score
        self.min_coverage = min_coverage
        self._topic = [set(tokens(f"{e.question} {e.keywords}")) for e in self.entries]
        corpus = [tokens(f"{e.question} {e.question} {e.keywords} {e.answer}") for e in self.entries]
        self._bm25 = _LuceneIdfBM25(corpus)
        n = len(self.entries)
        self._rare_idf = math.log(1 + (n - 0.5) / 1.5)  # weight of a word no entry contains

    def search(self, question: str) -> Match | None:
        """The best entry for ``question``, or None when nothing matches well enough."""
        query = tokens(question)
        if not query:
            return None
        scores = self._bm25.get_scores(query)
        best = max(range(len(scores)), key=lambda i: scores[i])
        shared = self._topic[best].intersection(query)
        if not shared:
            return None
        weight = {w: self._bm25.idf.get(w, self._rare_idf) for w in query}
        coverage = sum(weight[w] for w in shared) / sum(weight.values())
        if scores[best] < self.min_score and coverage < self.min_coverage:
            return None
        return Match(self.entries[best], float(scores[best]))


def load_entries(path: Path) -> list[Entry]:
    """Read a YAML or JSON knowledge file (see the module docstring for the shape)."""
    text = path.read_text(encoding="utf-8")
    data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if isinstance(data, dict):
        data = data.get("entries")
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of question/answer entries")
    entries: list[Entry] = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not item.get("question") or not item.get("answer"):
            raise ValueError(f"{path}: entry {i} needs a question and an answer")
        keywords = item.get("keywords") or ""
        if isinstance(keywords, list):
            keywords = " ".join(map(str, keywords))
        entries.append(Entry(str(item["question"]).strip(), str(item["answer"]).strip(), str(keywords)))
    return entries


class KnowledgeLibrary:
    """Knowledge bases by file, loaded once (in a thread) and reloaded when the file changes.

    A lookup looks at the file's modification time at most every ``recheck_s`` (1 s): every
    support turn used to take a trip to a worker thread for a ``stat`` under one lock of the
    process, a thread switch per turn that waits for the GIL behind the audio path under
    load. An edited file is picked up within ``recheck_s``."""

    def __init__(self, *, min_score: float = MIN_SCORE, recheck_s: float = 1.0) -> None:
        self.min_score = min_score
        self.recheck_s = recheck_s
        self._cache: dict[Path, tuple[float, KnowledgeBase]] = {}  # resolved path -> (mtime, base)
        self._fresh: dict[Path | None, tuple[float, KnowledgeBase]] = {}  # as asked -> (checked at, base)
        self._lock = asyncio.Lock()

    def _recent(self, path: Path | None) -> KnowledgeBase | None:
        fresh = self._fresh.get(path)
        if fresh is not None and time.monotonic() - fresh[0] < self.recheck_s:
            return fresh[1]
        return None

    async def get(self, path: Path | None) -> KnowledgeBase:
        if (base := self._recent(path)) is not None:
            return base
        async with self._lock:
            if (base := self._recent(path)) is not None:
                return base  # looked at while this one waited for the lock
            resolved, mtime = await asyncio.to_thread(_resolve_and_stat, path or DEFAULT_KNOWLEDGE_FILE)
            cached = self._cache.get(resolved)
            if cached is None or cached[0] != mtime:
                entries = await asyncio.to_thread(load_entries, resolved)
                cached = (mtime, KnowledgeBase(entries, min_score=self.min_score))
                self._cache[resolved] = cached
            self._fresh[path] = (time.monotonic(), cached[1])
            return cached[1]


def _resolve_and_stat(path: Path) -> tuple[Path, float]:
    resolved = path.resolve()
    return resolved, resolved.stat().st_mtime


def knowledge_tools(*, library: KnowledgeLibrary | None = None) -> list[BaseTool]:
    """search_knowledge."""
    lib = library or KnowledgeLibrary()

    @tool(parse_docstring=True)
    async def search_knowledge(question: str, runtime: ToolRuntime[CallContext]) -> str:
        """Look up the answer to a caller's question about the business (hours, location, prices, policies...).

        Args:
            question: the caller's question in their words.
        """
        ctx = runtime.context
        style = style_of(runtime)

        async def run() -> str:
            kb = await lib.get(ctx.flow_settings.knowledge_file)
            match = kb.search(question)
            if match is None:
                return DONT_KNOW_HI if style == "hi-en" else DONT_KNOW
            # amounts in rupees as said ("₹1,500" -> "1500 rupees"); English flows: as written
            return speak_money(match.entry.answer, style=style) if style != "en" else match.entry.answer

        fallback = "I can't look that up right now. Offer to take a message."
        return await speak_errors("search_knowledge", ctx, run, fallback)

    return [search_knowledge]
