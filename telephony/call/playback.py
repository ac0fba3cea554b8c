"""What the caller actually heard, from Twilio's mark echoes (pure, no I/O).

Twilio echoes a ``mark`` once the audio queued before it has played. So the session sends
a mark at least every ``mark_every_bytes`` of audio (800 bytes = 100 ms) and at the end of
every phrase, and the tracker remembers, per mark, how far into which phrase it sits.

What was heard is derived ONLY from marks echoed before a ``clear``: ``clear`` makes
Twilio return every pending mark at once, so a mark that comes back after it proves
nothing (``clear()`` freezes the tracker). Mark names carry the reply's generation and a
sequence number (``g<generation>.<seq>``); marks of another generation are ignored.
"""

from __future__ import annotations

from dialgraph.telephony.speech.base import SAMPLE_RATE

MARK_EVERY_BYTES = SAMPLE_RATE // 10  # 100 ms of 8 kHz mu-law


class PlaybackTracker:
    """Tracks one reply at a time; ``start_reply`` begins the next generation."""

    def __init__(self, *, mark_every_bytes: int = MARK_EVERY_BYTES) -> None:
        if mark_every_bytes <= 0:
            raise ValueError("mark_every_bytes must be positive")
        self.mark_every = mark_every_bytes
        self.generation = 0
        self._reset()

    def _reset(self) -> None:
        self._phrases: list[str] = []
        self._queued: list[int] = []  # audio bytes synthesized per phrase
        self._sent: list[int] = []  # audio bytes sent per phrase
        self._marks: list[tuple[int, int, bool]] = []  # seq -> (phrase, bytes into it, phrase end)
        self._since_mark = 0
        self._echoed = -1  # highest mark seq echoed
        self._cleared = False
        self._finished = False
        self._prefix = f"g{self.generation}."

    # --- the reply being produced -------------------------------------------------------------
    def start_reply(self, generation: int) -> None:
        """Forget the previous reply; marks of any other generation are ignored from now on."""
        self.generation = generation
        self._reset()

    def add_phrase(self, text: str) -> int:
        """Register the next phrase's text (phrase numbers follow the order given)."""
        self._phrases.append(text.strip())
        self._queued.append(0)
        self._sent.append(0)
        return len(self._phrases) - 1

    def add_audio(self, phrase: int, nbytes: int) -> None:
        """``nbytes`` of synthesized audio for ``phrase`` are queued (used for proportions)."""
        if 0 <= phrase < len(self._queued):
            self._queued[phrase] += nbytes

    def frame_sent(self, phrase: int, nbytes: int, phrase_end: bool) -> str | None:
        """A media frame went out; returns the name of a mark to send right after it, if due."""
        if 0 <= phrase < len(self._sent):
            self._sent[phrase] += nbytes
            pos = self._sent[phrase]
        else:
            pos = 0
        self._since_mark += nbytes
        if not phrase_end and self._since_mark < self.mark_every:
            return None
        self._since_mark = 0
        self._marks.append((phrase, pos, phrase_end))
        return self._prefix + str(len(self._marks) - 1)

    def finish(self) -> None:
        """No more audio will come for this reply."""
        self._finished = True

    # --- what came back -----------------------------------------------------------------------
    def mark_echoed(self, name: str) -> bool:
        """Twilio returned mark ``name``; True when it moved the heard position."""
        if self._cleared or not name.startswith(self._prefix):
            return False
        seq_s = name[len(self._prefix) :]
        if not (seq_s.isascii() and seq_s.isdigit()) or len(seq_s) > 9:
            return False
        seq = int(seq_s)
        if seq >= len(self._marks) or seq <= self._echoed:
            return False
        self._echoed = seq
        return True

    def clear(self) -> None:
        """A ``clear`` was sent: marks echoed from now on prove nothing."""
        self._cleared = True

    @property
    def audio_pending(self) -> bool:
        """Marks were sent that Twilio has not echoed yet."""
        return self._echoed < len(self._marks) - 1

    @property
    def all_played(self) -> bool:
        """The reply is complete and every mark sent for it has come back."""
        return self._finished and not self._cleared and not self.audio_pending

    @property
    def sent_any(self) -> bool:
        return bool(self._marks) or any(self._sent)

    @property
    def phrases_heard(self) -> int:
        """How many phrases of the reply have played to their end (per echoed marks)."""
        if self._echoed < 0:
            return 0
        phrase, _pos, end = self._marks[self._echoed]
        return phrase + 1 if end else phrase

    def full_text(self) -> str:
        """Everything the reply said (what the caller heard if it played to the end)."""
        return " ".join(p for p in self._phrases if p)

    def heard_text(self) -> str:
        """Phrases fully played plus the proportional word prefix of a partly played one."""
        if self._echoed < 0:
            return ""
        phrase, pos, end = self._marks[self._echoed]
        heard = [p for p in self._phrases[:phrase] if p]
        if 0 <= phrase < len(self._phrases):
            text = self._phrases[phrase]
            if end:
                heard.append(text)
            else:
                words = text.split()
                total = max(self._queued[phrase], self._sent[phrase], 1)
                k = len(words) * min(pos, total) // total
                if k:
                    heard.append(" ".join(words[:k]))
        return " ".join(h for h in heard if h)
