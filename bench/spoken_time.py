"""CPU of the offline model's reading of one caller turn, English and Hinglish.

Per turn: ``normalise`` + ``classify`` + ``parse_when`` + ``is_yes`` + ``is_no`` +
``extract_name`` (what ``graphs/offline_policy.py`` calls on every caller turn).

    .venv/bin/python -m bench.spoken_time
"""

from __future__ import annotations

import datetime as dt
import timeit

from dialgraph.graphs import intents, spoken_time

NOW = dt.datetime(2026, 12, 2, 8)
SETS = {
    "English": [
        "I'd like to book an appointment for next Friday at 10.30 please",
        "Can I move my appointment to Tuesday at half past two?",
        "no thanks, bye",
        "yes please",
        "my name is Ana Lopez",
    ],
    "Hinglish": [
        "Mujhe Thursday ko 11 baje appointment chahiye",
        "kal subah saade das baje",
        "haan ji",
        "mera naam Priya Sharma hai",
        "cancel kar do",
    ],
}


def main() -> None:
    for name, turns in SETS.items():

        def one_pass(turns: list[str] = turns) -> None:
            for said in turns:
                norm = spoken_time.normalise(said)
                intents.classify(norm, "scheduling")
                spoken_time.parse_when(said, NOW)
                intents.is_yes(norm)
                intents.is_no(norm)
                intents.extract_name(said)

        one_pass()
        number = 300
        best = min(timeit.repeat(one_pass, number=number, repeat=5)) / (number * len(turns))
        print(f"{name:9} {best * 1e6:6.0f} µs CPU per caller turn (best of 5)")


if __name__ == "__main__":
    main()
