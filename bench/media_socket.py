"""The media socket's own CPU: what the WebSocket layer under ``/twilio/media`` costs per
call-second, apart from everything a call does with its audio (issue 16).

A whole call costs ~6.2 ms of server CPU per call-second (``bench.load_whole``). This bench
isolates the layer that carries Twilio's frames: a server pinned to one core accepts N
WebSockets and, for each, parses every inbound ``media`` frame with our codec
(``codec.parse``) and answers every 5th with a 100 ms ``media`` message (the pacer's size
while the agent talks). The callers are the lean Twilio client (``simulator.lean``) on the
other core, one 20 ms frame per call per tick, as Twilio sends them. Servers:

* ``uvicorn-sansio``: uvicorn's ``websockets-sansio`` protocol, FastAPI's WebSocket read
  through ``server.routes.media.StarletteMediaSocket`` (the ASGI message dicts, the queue, a
  reader task woken per frame): the media socket before ``server/routes/media_socket.py``,
  and still the route for a server run without ``server.cli.uvicorn_options``;
* ``uvicorn-websockets``, ``uvicorn-wsproto``: uvicorn's other two protocols, same app;
* ``picows-task``: picows (MIT; a Cython WebSocket), each frame handed to a reader task
  through a deque and a future, as ``server/routes/media_socket.py`` first did for a session;
* ``picows``: picows with the frame handled in its callback, no task woken per frame, as a
  session now takes its frames (``PushingSocket``).

Each server runs ``--seconds`` (default 10) after a 5 s warm-up; its CPU (user + system,
from /proc) is printed as ms per call-second and share of the core. Rows whose packages are
missing are skipped with a message.

    .venv/bin/python -m bench.media_socket [--calls 150] [--seconds 10] [--only uvicorn-sansio picows]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import os
import subprocess
import sys
import time

from fastapi import FastAPI, WebSocket  # module level: FastAPI resolves the handler's annotations here

from bench.load_calls import cpu_s
from dialgraph.telephony.simulator.lean import FrameSocket, client_frame, open_frame_socket
from dialgraph.telephony.simulator.process import free_port
from dialgraph.telephony.twilio import codec

SERVERS = ["uvicorn-sansio", "uvicorn-websockets", "uvicorn-wsproto", "picows-task", "picows"]
UVICORN_WS = {"uvicorn-sansio": "websockets-sansio", "uvicorn-websockets": "websockets", "uvicorn-wsproto": "wsproto"}
PATH = "/twilio/media"
STREAM_SID = "MZ00000000000000000000000000000000"
REPLY_EVERY = 5  # one 100 ms message out per five 20 ms frames in
REPLY = codec.media(STREAM_SID, b"\xff" * 800)
WARMUP_S = 5.0


# --- the servers (each runs in its own process: ``--serve NAME PORT``) ---------------------------
def serve_uvicorn(ws: str, port: int) -> None:
    import uvicorn

    from dialgraph.server.routes.media import StarletteMediaSocket

    app = FastAPI()

    @app.websocket(PATH)
    async def media(websocket: WebSocket) -> None:
        await websocket.accept()
        sock = StarletteMediaSocket(websocket)
        n = 0
        while (frame := await sock.receive()) is not None:
            codec.parse(frame)
            n += 1
            if n % REPLY_EVERY == 0:
                await sock.send(REPLY)

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        ws=ws,
        log_level="warning",
        ws_per_message_deflate=False,
        ws_ping_interval=None,
    )


def serve_picows(port: int, *, task: bool) -> None:
    import uvloop
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    reply = REPLY.encode()

    class Callbacks(WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.n = 0

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                codec.parse(frame.get_payload_as_ascii_text())
                self.n += 1
                if self.n % REPLY_EVERY == 0:
                    transport.send(WSMsgType.TEXT, reply)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    class Reader(WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            self.frames: collections.deque[str] = collections.deque()
            self.waiter: asyncio.Future[None] | None = None

        def on_ws_connected(self, transport: WSTransport) -> None:
            self.transport = transport
            self.task = asyncio.get_running_loop().create_task(self.read())

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                self.frames.append(frame.get_payload_as_ascii_text())
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(None)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            self.task.cancel()

        async def receive(self) -> str:
            while not self.frames:
                self.waiter = asyncio.get_running_loop().create_future()
                await self.waiter
            return self.frames.popleft()

        async def read(self) -> None:
            n = 0
            while True:
                codec.parse(await self.receive())
                n += 1
                if n % REPLY_EVERY == 0:
                    self.transport.send(WSMsgType.TEXT, reply)

    async def main() -> None:
        server = await ws_create_server(lambda _request: Reader() if task else Callbacks(), "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(main())


# --- the driver ----------------------------------------------------------------------------------
def available(name: str) -> str | None:
    """None when ``name`` can run here, else why not."""
    import importlib.util

    need = "picows" if name.startswith("picows") else UVICORN_WS[name].split("-")[0]
    return None if importlib.util.find_spec(need) else f"needs {need} (pip install {need})"


async def drive(port: int, calls: int, seconds: float, server_pid: int) -> tuple[float, float]:
    """Open ``calls`` sockets, send a frame per call per 20 ms; returns (server CPU seconds,
    wall seconds) over the measured window."""
    deadline = time.monotonic() + 10
    while True:
        try:
            socks: list[FrameSocket] = []
            for _ in range(calls):
                socks.append(await open_frame_socket("127.0.0.1", port, PATH, {}, lambda _text, _now: None))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    payload = base64.b64encode(b"\xff" * 160).decode()
    loop = asyncio.get_running_loop()
    start = due = loop.time()
    seq, cpu0, t0 = 0, 0.0, 0.0
    while (now := loop.time()) < start + WARMUP_S + seconds:
        if not t0 and now >= start + WARMUP_S:
            cpu0, t0 = cpu_s(server_pid), now
        seq += 1
        frame = client_frame(
            f'{{"event":"media","sequenceNumber":"{seq}","media":{{"track":"inbound","chunk":"{seq}",'
            f'"timestamp":"{seq * 20}","payload":"{payload}"}},"streamSid":"{STREAM_SID}"}}'
        )
        for sock in socks:
            sock.send(frame)
        due += 0.02
        await asyncio.sleep(max(0.0, due - loop.time()))
    cpu, wall = cpu_s(server_pid) - cpu0, loop.time() - t0
    for sock in socks:
        if sock.transport is not None:
            sock.transport.close()
    return cpu, wall


def run(name: str, calls: int, seconds: float, server_core: int, client_core: int) -> tuple[float, float]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.media_socket", "--serve", name, str(port)],
        preexec_fn=lambda: os.sched_setaffinity(0, {server_core}),  # noqa: PLW1509 (no threads yet here)
    )
    try:
        os.sched_setaffinity(0, {client_core})
        cpu, wall = asyncio.run(drive(port, calls, seconds, server.pid))
    finally:
        server.terminate()
        server.wait(10)
    return cpu, wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--only", nargs="+", choices=SERVERS, default=SERVERS)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument("--serve", nargs=2, metavar=("NAME", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        name, port = args.serve[0], int(args.serve[1])
        if name.startswith("picows"):
            serve_picows(port, task=name == "picows-task")
        else:
            serve_uvicorn(UVICORN_WS[name], port)
        return
    print(
        f"{args.calls} media sockets, a frame in per call per 20 ms and a 100 ms message out per "
        f"{REPLY_EVERY}; server on core {args.server_core}, callers on core {args.client_core}; "
        f"{args.seconds:.0f} s measured after {WARMUP_S:.0f} s"
    )
    print(f"{'server':20s} {'ms CPU per call-second':>24s} {'core':>6s}")
    for name in args.only:
        if (why := available(name)) is not None:
            print(f"{name:20s} skipped: {why}")
            continue
        cpu, wall = run(name, args.calls, args.seconds, args.server_core, args.client_core)
        print(f"{name:20s} {cpu * 1000 / (args.calls * wall):>24.3f} {100 * cpu / wall:>5.1f}%")


if __name__ == "__main__":
    main()
