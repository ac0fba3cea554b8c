"""Concurrent simulated calls against one server process: latency, frame gaps, memory.

Starts ``bench.load_server`` (real app, graphs and offline model; instant fake speech)
as a separate process, then for each N runs N concurrent calls of a short support
scenario through the phone simulator's load mode and prints:

- reply latency as the caller hears it (end of caller speech -> first agent audio
  frame received; includes the fake ASR's 300 ms endpointing), p50 / p99;
- the service's own share (final transcript -> first audio frame sent, from the
  server's call events), p50 / p99;
- p99 gap between agent audio frames arriving within a reply, and underruns (the
  simulated Twilio buffer running dry mid-reply);
- server memory per call (peak RSS during the run minus RSS before, / N) and CPU.

    .venv/bin/python -m bench.load_calls [--calls 50 100 250] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from dialgraph.telephony.simulator.load import load
from dialgraph.telephony.simulator.process import free_port
from dialgraph.telephony.simulator.text_speech import TextSynthesizer

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "bench" / "scenarios" / "load_support.yaml"


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sample_peak(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_kb(pid))
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except TimeoutError:
            pass


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


async def run(counts: list[int], url: str, pid: int) -> None:
    print(f"server pid {pid} on {url}; scenario {SCENARIO.name}; {os.cpu_count()} cores")
    print(
        f"{'calls':>6} {'ok':>5} {'reply p50':>10} {'reply p99':>10} {'svc p50':>8} {'svc p99':>8} "
        f"{'gap p99':>8} {'underruns':>9} {'viol':>5} {'MB/call':>8} {'srv CPU':>8} {'sim CPU':>8} {'wall s':>7}"
    )
    for n in counts:
        before, cpu0, own0 = rss_kb(pid), cpu_s(pid), time.process_time()
        stop, peak = asyncio.Event(), [before]
        sampler = asyncio.create_task(sample_peak(pid, stop, peak))
        result = await load(
            n, SCENARIO, url=url, admin_token="dev-admin-token", synthesizer=TextSynthesizer(), ramp_s=min(10.0, n / 25)
        )
        stop.set()
        await sampler
        cpu = (cpu_s(pid) - cpu0) / result.wall_s
        own = (time.process_time() - own0) / result.wall_s
        ok = n - len(result.failed)
        print(
            f"{n:>6} {ok:>5} {fmt(result.reply_p50_ms):>10} {fmt(result.reply_p99_ms):>10} "
            f"{result.server_p50_ms or 0:>8.1f} {result.server_p99_ms or 0:>8.1f} {fmt(result.gap_p99_ms):>8} "
            f"{result.underruns:>9} {result.violations:>5} {(peak[0] - before) / 1024 / n:>8.2f} "
            f"{cpu:>8.0%} {own:>8.0%} {result.wall_s:>7.1f}",
            flush=True,
        )
        for call in result.failed[:3]:
            print(f"   failed {call.call_sid}: {'; '.join(call.failures)[:200]}")


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the load server did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--calls", type=int, nargs="+", default=[50, 100, 250])
    p.add_argument("--database-url", default=None, help="PostgreSQL URL (default: SQLite in a temp dir)")
    args = p.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        cmd = [sys.executable, "-m", "bench.load_server", "--port", str(port), "--data-dir", data]
        if args.database_url:
            cmd += ["--database-url", args.database_url]
        proc = subprocess.Popen(cmd, cwd=ROOT)
        try:
            wait_ready(url, proc)
            asyncio.run(run(args.calls, url, proc.pid))
        finally:
            proc.terminate()
            proc.wait(timeout=20)


if __name__ == "__main__":
    main()
