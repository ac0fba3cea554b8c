"""The redaction of a transcript turn: microseconds per ``Redactor.redact``.

Caller turns as the recognisers write them, in four kinds: plain talk (no digits), a time
or a date ("next Tuesday at 10:30"), a phone number, and turns carrying PII (a card in
groups, a card and an Aadhaar spoken as words, an OTP, a PAN, an e-mail). Each turn is
redacted ``--n`` times with the shipped settings (every category on); the figure is CPU
time per turn, p50 / p99 / mean, measured in this process. Run:

    .venv/bin/python -m bench.redaction [--n 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from dialgraph.server.core.redaction import Redactor

TURNS = {
    "plain talk": [
        "Hi, I'd like to book a cleaning, please.",
        "Can I speak to someone at the front desk?",
        "No, that's all. Thank you very much, goodbye.",
        "Actually I was wondering whether you are open on the weekend as well, because I work during the week.",
    ],
    "times and dates": [
        "Next Tuesday at 10:30 in the morning would be great.",
        "Can we move it to the 8th of December at 3 pm?",
        "Kal subah 10 baje ka appointment chahiye.",
    ],
    "a phone number": [
        "You can call me back on 415 555 0123.",
        "My number is plus nine one nine eight one two three four five six seven eight.",
    ],
    "PII": [
        "Why was my card 4111 1111 1111 1111 charged twice?",
        "Please refund my card four one one one, one one one one, one one one one, one one one one. "
        "My Aadhaar number is two three four five six seven eight nine zero one two four.",
        "The OTP is 482913 and my PAN is ABCDE1234F.",
        "Send it to jane.doe@example.com, expiry 04/28, CVV 123.",
    ],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="redactions of each turn")
    args = parser.parse_args(argv)
    redactor = Redactor()
    print(f"\nRedactor.redact: CPU µs per transcript turn ({args.n} runs of each turn)\n")
    print("| turns           | chars |  p50 µs |  p99 µs | mean µs |")
    print("|-----------------|-------|---------|---------|---------|")
    for kind, turns in TURNS.items():
        for turn in turns:
            redactor.redact(turn)  # warm the patterns
        samples: list[float] = []
        for _ in range(args.n):
            for turn in turns:
                start = time.process_time_ns()
                redactor.redact(turn)
                samples.append((time.process_time_ns() - start) / 1000)
        samples.sort()
        chars = sum(len(t) for t in turns) // len(turns)
        p99 = samples[int(len(samples) * 0.99)]
        print(
            f"| {kind:<15} | {chars:5d} | {statistics.median(samples):7.1f} | {p99:7.1f} |"
            f" {statistics.fmean(samples):7.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
