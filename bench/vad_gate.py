"""The barge-in VAD's cost and behaviour: silero behind an energy gate (issue 16).

The session runs the VAD on every inbound frame while the agent holds the floor, so its
cost is paid per agent-speaking call-second, mostly on a caller who is silent: a line with
some noise on it. Three settings of ``SileroVad`` are compared on the same audio:

  model      the model on every window (no gate)
  silence    the gate before issue 16: skip windows with no frame above -55 dBFS
  floor      that, and skip windows with no frame 6 dB above the line's noise floor

Figures, in this process (CPU = process time, the box is shared: alternate runs):
  cpu ms/call-s   VAD CPU per agent-speaking call-second, caller silent, white line noise at
                  the given level (none: digital silence, what the simulator sends)
  runs/s          model runs per call-second (31.25 at most: one per 256-sample window)
  onset ms        per phrase: from the phrase's first audible 10 ms to the barge-in the turn
                  policy (200 ms of speech) decides, speech over line noise at -55/-45/-35
                  dBFS; the target is <= 250 ms
  false           barge-ins outside any phrase: line noise alone, and bursts of white noise,
                  120 Hz hum and clatter at -30 and -20 dBFS after each phrase
  gate us/frame   the energy measure alone: audioop (used), a translate table + sum, numpy

Speech is piper's (the offline extra); without it only the cost figures are printed.

Usage: python -m bench.vad_gate [--seconds 20]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from dialgraph.telephony.audio import audioop
from dialgraph.telephony.call.turn_policy import TurnPolicy
from dialgraph.telephony.speech.base import FRAME_BYTES
from dialgraph.telephony.speech.vad import SileroVad

SETTINGS: dict[str, dict[str, Any]] = {
    "model": {"gate_dbfs": float("-inf"), "floor_margin_db": None},
    "silence": {"floor_margin_db": None},
    "floor": {},
}
PHRASES = [
    "Hello, I would like to speak to someone about my bill.",
    "No wait, stop.",
    "Actually, can you repeat that?",
    "Sorry, I have a question about Tuesday.",
]
RATE = 8000


def _ulaw(x: np.ndarray) -> bytes:
    out = audioop.lin2ulaw(np.clip(x, -32768, 32767).astype("<i2").tobytes(), 2)
    return out[: len(out) // FRAME_BYTES * FRAME_BYTES]


def _lin(u: bytes) -> np.ndarray:
    return np.frombuffer(audioop.ulaw2lin(u, 2), dtype=np.int16).astype(np.float64)


def _noise(rng: np.random.Generator, dbfs: float | None, n: int) -> np.ndarray:
    return np.zeros(n) if dbfs is None else rng.normal(0, 32768 * 10 ** (dbfs / 20), n)


def _burst(rng: np.random.Generator, kind: str, dbfs: float, n: int) -> np.ndarray:
    amp = 32768 * 10 ** (dbfs / 20)
    if kind == "white":
        return rng.normal(0, amp, n)
    if kind == "hum":
        t = np.arange(n) / RATE
        return amp * 1.4 * (np.sin(2 * np.pi * 120 * t) + 0.5 * np.sin(2 * np.pi * 240 * t + 1))
    out = np.zeros(n)  # clatter: decaying clicks
    for c in rng.integers(0, n - 400, 6):
        out[c : c + 400] += rng.normal(0, amp, 400) * np.exp(-np.arange(400) / 60)
    return out


def cost(setting: str, line_dbfs: float | None, seconds: float) -> tuple[float, float]:
    """CPU ms and model runs per call-second on a silent caller's line."""
    audio = _ulaw(_noise(np.random.default_rng(1), line_dbfs, int(seconds * RATE)))
    frames = [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
    vad = SileroVad(**SETTINGS[setting])
    t = time.process_time()
    for f in frames:
        vad.speech_probability(f)
    cpu = time.process_time() - t
    return cpu / seconds * 1000, vad.runs / seconds


def _onset(x: np.ndarray) -> int:
    env = [float(np.sqrt(np.mean(x[i : i + 80] ** 2))) for i in range(0, len(x) - 80, 80)]
    peak = max(env)
    return next(i for i, e in enumerate(env) if e > 0.05 * peak) * 80


def barge_ins(
    setting: str, phrases: list[np.ndarray], line_dbfs: float, burst: tuple[str, float] | None
) -> tuple[list[int], int]:
    """Phrases over line noise (each followed by noise bursts when ``burst``), the agent
    speaking throughout: each phrase's barge-in delay (ms) and the barge-ins elsewhere."""
    rng = np.random.default_rng(3)
    parts: list[np.ndarray] = []
    spans: list[tuple[float, float]] = []
    n = 0
    for x in phrases:
        parts.append(np.zeros(2 * RATE))
        n += 2 * RATE
        spans.append(((n + _onset(x)) / RATE, (n + len(x)) / RATE))
        parts.append(x)
        n += len(x)
        for _ in range(6 if burst else 0):
            gap, size = int(RATE * rng.uniform(0.3, 0.8)), int(RATE * rng.uniform(0.2, 0.6))
            parts += [np.zeros(gap), _burst(rng, burst[0], burst[1], size)] if burst else []
            n += gap + size
    parts.append(np.zeros(2 * RATE))
    signal = np.concatenate(parts)
    audio = _ulaw(signal + _noise(rng, line_dbfs, len(signal)))
    vad = SileroVad(**SETTINGS[setting])
    policy = TurnPolicy(barge_in_min_ms=200)
    policy.agent_turn_started()
    policy.agent_audio_started()
    delays: list[int] = []
    false = 0
    nxt = 0
    for i in range(len(audio) // FRAME_BYTES):
        at = i * 0.02
        if nxt < len(spans) and at >= spans[nxt][0] - 0.5:  # the agent has the floor again
            policy.playback_done()
            policy.agent_turn_started()
            policy.agent_audio_started()
            nxt += 1
        if policy.vad(at, vad.speech_probability(audio[i * FRAME_BYTES : (i + 1) * FRAME_BYTES])):
            t = at + 0.02
            hit = [s for s, e in spans if s - 0.3 <= t <= e]
            if hit:
                delays.append(round((t - hit[0]) * 1000))
            else:
                false += 1
    return delays, false


def gate_micro() -> dict[str, float]:
    frame = _ulaw(np.random.default_rng(2).normal(0, 300, FRAME_BYTES))
    linear = np.frombuffer(audioop.ulaw2lin(bytes(range(256)), 2), dtype=np.int16)
    table = bytes(min(255, abs(int(v)) >> 7) for v in linear)
    squares = linear.astype(np.int64) ** 2
    ways = {
        "audioop": lambda: audioop.rms(audioop.ulaw2lin(frame, 2), 2),
        "translate+sum": lambda: sum(frame.translate(table)),
        "numpy": lambda: squares[np.frombuffer(frame, dtype=np.uint8)].sum(),
    }
    out = {}
    for name, fn in ways.items():
        n = 50_000
        t = time.process_time()
        for _ in range(n):
            fn()
        out[name] = (time.process_time() - t) / n * 1e6
    return out


def _speech() -> list[np.ndarray] | None:
    try:
        from dialgraph.telephony.speech.offline_tts import load_piper, render_piper

        voice = load_piper()
    except Exception:
        return None
    return [_lin(render_piper(voice, p, variation=False)) for p in PHRASES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="of silent-caller audio per cost row")
    args = parser.parse_args()
    SileroVad.preload()
    print("VAD cost on a silent caller's line (agent speaking), per call-second")
    print(f"{'line noise':>10} " + " ".join(f"{s + ' cpu ms':>16} {'runs/s':>6}" for s in SETTINGS))
    for level in (None, -60.0, -50.0, -40.0, -30.0):
        row = [cost(s, level, args.seconds) for s in SETTINGS]
        name = "none" if level is None else f"{level:.0f} dBFS"
        print(f"{name:>10} " + " ".join(f"{c:>16.3f} {r:>6.1f}" for c, r in row), flush=True)
    print("gate us/frame: " + ", ".join(f"{k} {v:.2f}" for k, v in gate_micro().items()))
    phrases = _speech()
    if phrases is None:
        print("no piper voice (offline extra): barge-in figures skipped")
        return
    print("barge-in onset ms per phrase (target <= 250) and false barge-ins")
    cases: list[tuple[str, float, tuple[str, float] | None]] = [
        (f"speech, line {lvl:.0f} dBFS", lvl, None) for lvl in (-55.0, -45.0, -35.0)
    ]
    cases += [
        (f"speech + {k} {b:.0f} dBFS", -50.0, (k, b)) for k in ("white", "hum", "clatter") for b in (-30.0, -20.0)
    ]
    for name, line, burst in cases:
        cells = []
        for s in SETTINGS:
            delays, false = barge_ins(s, phrases, line, burst)
            cells.append(f"{s}: {','.join(map(str, delays)):<16} false {false}")
        print(f"{name:>28}  " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
