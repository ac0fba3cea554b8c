"""Heard-text tracking from mark echoes (pure)."""

from __future__ import annotations

from dialgraph.telephony.call.playback import PlaybackTracker


def play(tracker: PlaybackTracker, phrases: list[str], bytes_per_word: int = 800) -> list[str]:
    """Register phrases, send their audio as 160-byte frames; return the mark names sent."""
    marks = []
    for text in phrases:
        index = tracker.add_phrase(text)
        total = len(text.split()) * bytes_per_word
        tracker.add_audio(index, total)
        for offset in range(0, total, 160):
            name = tracker.frame_sent(index, 160, phrase_end=offset + 160 >= total)
            if name is not None:
                marks.append(name)
    tracker.finish()
    return marks


def test_marks_every_100ms_and_at_each_phrase_end() -> None:
    tracker = PlaybackTracker()
    tracker.start_reply(3)
    marks = play(tracker, ["Hello there.", "How can I help?"], bytes_per_word=480)
    # phrase 0: 960 bytes -> a mark at 800 and one at its end (960); phrase 1: 1920 bytes
    assert marks == [f"g3.{i}" for i in range(len(marks))]
    assert len(marks) == 2 + 3


def test_heard_text_follows_echoes() -> None:
    tracker = PlaybackTracker()
    tracker.start_reply(1)
    marks = play(tracker, ["one two three four.", "five six."])  # one mark per word
    assert tracker.heard_text() == ""
    assert tracker.mark_echoed(marks[0])
    assert tracker.heard_text() == "one"
    assert tracker.mark_echoed(marks[2])  # echoes may be skipped (only the latest counts)
    assert tracker.heard_text() == "one two three"
    assert tracker.mark_echoed(marks[3])
    assert tracker.heard_text() == "one two three four."
    assert not tracker.all_played
    assert tracker.mark_echoed(marks[5])
    assert tracker.heard_text() == "one two three four. five six."
    assert tracker.all_played


def test_partial_phrase_is_a_proportional_word_prefix() -> None:
    tracker = PlaybackTracker()
    tracker.start_reply(1)
    index = tracker.add_phrase("alpha beta gamma delta")
    tracker.add_audio(index, 4000)
    names = [tracker.frame_sent(index, 160, False) for _ in range(10)]  # 1600 of 4000 bytes
    assert names.count(None) == 8
    assert tracker.mark_echoed(names[-1])  # type: ignore[arg-type]
    assert tracker.heard_text() == "alpha"  # 40 % of 4 words, rounded down


def test_marks_returned_after_a_clear_prove_nothing() -> None:
    tracker = PlaybackTracker()
    tracker.start_reply(1)
    marks = play(tracker, ["one two three four five six."])
    tracker.mark_echoed(marks[1])
    tracker.clear()
    for name in marks[2:]:  # Twilio returns every pending mark at once on clear
        assert not tracker.mark_echoed(name)
    assert tracker.heard_text() == "one two"
    assert not tracker.all_played


def test_stale_generations_and_junk_names_are_ignored() -> None:
    tracker = PlaybackTracker()
    tracker.start_reply(1)
    old = play(tracker, ["old reply words."])
    tracker.start_reply(2)
    new = play(tracker, ["new words."])
    assert not tracker.mark_echoed(old[0])
    for junk in ("", "g2.", "g2.x", "g2.-1", "g2.99", "g22.0", "g2.0.1", "my label"):
        assert not tracker.mark_echoed(junk)
    assert tracker.heard_text() == ""
    assert tracker.mark_echoed(new[0])
    assert not tracker.mark_echoed(new[0])  # a duplicate echo moves nothing
    assert tracker.heard_text() == "new"


def test_a_reply_without_audio_is_played_at_once() -> None:
    tracker = PlaybackTracker()
    tracker.start_reply(5)
    assert not tracker.all_played
    tracker.finish()
    assert tracker.all_played
    assert tracker.heard_text() == ""
