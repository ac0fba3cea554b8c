"""PhraseChunker: examples plus property-based tests (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dialgraph.telephony.call.phrases import PhraseChunker

PROTECTED = [
    "3.50",
    "$1,250.75",
    "2:30",
    "10 a.m.",
    "4:15 p.m.",
    "Dr. Smith",
    "Mr. Jones",
    "e.g.",
    "i.e.",
    "U.S.",
    "bob.jones@example.com",
    "555-123-4567",
    "(555) 123-4567",
    "+1 555 123 4567",
    "March 3, 2025",
    "No. 5",
]
WORDS = ["okay", "the", "appointment", "is", "booked", "we", "open", "tomorrow", "thanks", "Sure", "I", "can"]
PUNCT = ["", "", "", ",", ".", "!", "?", ";", ":", " -", "\n"]


def chunk(text: str, cuts: list[int], **kw: int) -> list[str]:
    c = PhraseChunker(**kw)
    out: list[str] = []
    last = 0
    for cut in sorted(set(cuts)):
        out += c.push(text[last:cut])
        last = cut
    out += c.push(text[last:])
    return out + c.flush()


def norm(s: str) -> str:
    return " ".join(s.split())


@st.composite
def replies(draw: st.DrawFn) -> str:
    parts = draw(
        st.lists(
            st.tuples(st.sampled_from(WORDS + PROTECTED), st.sampled_from(PUNCT)),
            min_size=1,
            max_size=60,
        )
    )
    return " ".join(w + p for w, p in parts)


@st.composite
def split_text(draw: st.DrawFn, text_strategy: st.SearchStrategy[str]) -> tuple[str, list[int]]:
    text = draw(text_strategy)
    cuts = draw(st.lists(st.integers(0, len(text)), max_size=40))
    return text, cuts


@given(split_text(replies()))
@settings(max_examples=300, deadline=None)
def test_phrases_reassemble_to_input_and_keep_protected_tokens(case: tuple[str, list[int]]) -> None:
    text, cuts = case
    phrases = chunk(text, cuts)
    assert norm(" ".join(phrases)) == norm(text)
    assert all(p == p.strip() and p for p in phrases)
    whole = norm(text)
    for token in PROTECTED:
        assert sum(norm(p).count(token) for p in phrases) == whole.count(token), token


@given(split_text(replies()), st.lists(st.integers(0, 10_000), max_size=40))
@settings(max_examples=200, deadline=None)
def test_phrases_do_not_depend_on_token_boundaries(case: tuple[str, list[int]], other: list[int]) -> None:
    text, cuts = case
    assert chunk(text, cuts) == chunk(text, [c % (len(text) + 1) for c in other])


@given(split_text(st.text(alphabet=st.sampled_from(list("ab .,!?:;-\n1@")), max_size=400)))
@settings(max_examples=300, deadline=None)
def test_any_text_reassembles(case: tuple[str, list[int]]) -> None:
    text, cuts = case
    phrases = chunk(text, cuts, min_chars=5, max_chars=40)
    assert norm(" ".join(phrases)) == norm(text)
    assert chunk(text, []) == chunk(text, list(range(len(text) + 1)))


@given(st.lists(st.sampled_from(WORDS), min_size=60, max_size=120))
def test_long_unpunctuated_text_is_cut_near_max_chars(words: list[str]) -> None:
    text = " ".join(words)
    phrases = chunk(text, list(range(0, len(text), 4)), max_chars=80)
    assert all(len(p) <= 80 for p in phrases)
    assert len(phrases) >= 2


def test_first_sentence_comes_out_before_the_reply_ends() -> None:
    c = PhraseChunker()
    assert c.push("Sure") == []
    assert c.push(".") == []
    assert c.push(" Let") == ["Sure."]


def test_clause_boundary_needs_min_chars() -> None:
    c = PhraseChunker(min_chars=24, first_min_chars=24)
    out = c.push("Well, I think we can book that for you, ")
    out += c.push("no problem")
    assert out == ["Well, I think we can book that for you,"]
    assert c.flush() == ["no problem"]


def test_the_first_phrase_ends_at_the_first_clause_and_later_ones_need_min_chars() -> None:
    c = PhraseChunker(min_chars=24)
    assert c.push("Sure,") == []  # the next visible character decides
    assert c.push(" I") == ["Sure,"]  # heard while the model writes the rest
    out = c.push(" can, I think, book that for you, ")
    out += c.push("no problem")
    assert out == ["I can, I think, book that for you,"]
    assert c.flush() == ["no problem"]
    assert chunk("I, um. Well, yes.", [3, 9]) == ["I, um.", "Well, yes."]  # 3 characters at least


def test_examples_never_split_inside_protected_spans() -> None:
    text = (
        "I can book Dr. Smith at 10 a.m. on Monday, March 3, 2025, if that works. "
        "Call 555-123-4567 or e-mail bob.jones@example.com. No. I can't. It costs $3.50, e.g. in the U.S. today."
    )
    assert chunk(text, list(range(0, len(text), 2))) == [
        "I can book Dr. Smith at 10 a.m. on Monday, March 3, 2025,",
        "if that works.",
        "Call 555-123-4567 or e-mail bob.jones@example.com.",
        "No.",
        "I can't.",
        "It costs $3.50, e.g. in the U.S. today.",
    ]


def test_forced_cut_keeps_phone_number_whole() -> None:
    text = "please call " * 14 + "+1 555 123 4567 " + "and ask " * 20
    phrases = chunk(text, list(range(0, len(text), 3)), max_chars=170)
    assert sum(p.count("+1 555 123 4567") for p in phrases) == 1
