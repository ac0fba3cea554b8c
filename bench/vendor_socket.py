"""The vendor sockets' client side: CPU per message sent, ``websockets`` against picows.

Each call sends Deepgram 25-50 audio messages a second, and every reply sends ElevenLabs its
phrases; both clients are written on the ``websockets`` asyncio API. This sends ``--messages``
binary messages of 320 bytes (40 ms of mu-law, Deepgram's chunk) through each client to a
picows server in the same process (it only counts them) and prints the process's CPU per
message, both ends included, on one pinned core:

* ``websockets``: ``websockets.asyncio.client.connect`` (what the vendor sockets used);
* ``picows``: ``picows.websockets.connect``, picows' implementation of the same API (framing
  and masking in C), which ``telephony/speech/deepgram.py`` and ``elevenlabs.py`` now use.

    .venv/bin/python -m bench.vendor_socket [--messages 50000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import uvloop
from picows import WSFrame, WSListener, WSTransport, ws_create_server

CHUNK = b"\xff" * 320  # 40 ms of 8 kHz mu-law


class _Count(WSListener):  # type: ignore[misc]
    received = 0
    wanted = 0
    all_in: asyncio.Event | None = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        _Count.received += 1
        if _Count.received >= _Count.wanted and _Count.all_in is not None:
            _Count.all_in.set()


async def per_message_us(client: str, messages: int) -> float:
    server = await ws_create_server(lambda _request: _Count(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connect: Any
    if client == "websockets":
        from websockets.asyncio.client import connect
    else:
        from picows.websockets import connect
    ws = await connect(f"ws://127.0.0.1:{port}/", compression=None, proxy=None)
    _Count.received, _Count.wanted, _Count.all_in = 0, messages, asyncio.Event()
    started = time.process_time()
    for _ in range(messages):
        await ws.send(CHUNK)
    await _Count.all_in.wait()
    spent = time.process_time() - started
    await ws.close()
    server.close()
    return spent / messages * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    for client in ("websockets", "picows"):
        figures = [uvloop.run(per_message_us(client, args.messages)) for _ in range(args.runs)]
        print(f"{client:10s} " + " ".join(f"{f:.1f}" for f in figures) + " µs of CPU per message sent")


if __name__ == "__main__":
    main()
