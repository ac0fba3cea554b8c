"""The lean media client for load generators: hundreds of Twilio streams in one process.

A load generator shares the machine's cores with the server it measures, so a stream costs
as little as it can: a raw asyncio ``Protocol`` speaking RFC 6455 by hand and no task of its
own (the generator's tick loop sends every stream's frame). Text frames go out masked with
an all-zero key (legal; XOR with zero leaves the payload as is, so nothing is masked in
Python), several messages in one write. The Twilio protocol is ``TwilioProtocol``'s, as for
every other leg: only the socket is lean.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable, Iterable, Mapping

from dialgraph.telephony.simulator.protocol import Received, TwilioProtocol

CLOSE_FRAME = struct.pack("!BB", 0x88, 0x82) + b"\0\0\0\0" + struct.pack("!H", 1000)


def client_frame(text: str) -> bytes:
    """``text`` as a masked (all-zero key) WebSocket text frame, ready to write."""
    data = text.encode()
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return head + b"\0\0\0\0" + data


class FrameSocket(asyncio.Protocol):
    """One WebSocket client connection: the upgrade, text frames in (``on_text(text, now)``,
    ``now`` from the loop's clock), frames out, the close handshake."""

    def __init__(self, on_text: Callable[[str, float], None]) -> None:
        loop = asyncio.get_running_loop()
        self._on_text = on_text
        self._time = loop.time
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._upgraded = False
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, frames: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frames)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:end]).split(b"\r\n", 1)[0]
            del buf[: end + 4]
            if b" 101 " not in status:
                self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
                assert self.transport is not None
                self.transport.close()
                return
            self._upgraded = True
            self.opened.set_result(None)
        now = self._time()
        pos, size = 0, len(buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n, head = b1 & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if size - pos < head + n:
                break
            start = pos + head
            pos = start + n
            opcode = b0 & 0x0F
            if opcode == 1:
                self._on_text(buf[start:pos].decode(), now)
            elif opcode == 8:
                self.send(CLOSE_FRAME)
                assert self.transport is not None
                self.transport.close()
        del buf[:pos]


async def open_frame_socket(
    host: str, port: int, path: str, headers: Mapping[str, str], on_text: Callable[[str, float], None]
) -> FrameSocket:
    """Connect, upgrade to WebSocket; returns once the server said 101."""
    loop = asyncio.get_running_loop()
    _, sock = await loop.create_connection(lambda: FrameSocket(on_text), host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    sock.send(("\r\n".join(lines) + "\r\n\r\n").encode())
    await sock.opened
    return sock


class LeanLeg:
    """One Twilio stream driven by a load generator's tick loop: ``tick`` sends the caller's
    next 20 ms frame with the mark echoes due; ``on_event`` sees every server message as
    Twilio played it."""

    def __init__(self, protocol: TwilioProtocol, on_event: Callable[[Received, float], None]) -> None:
        self.protocol = protocol
        self._on_event = on_event
        self._socket: FrameSocket | None = None

    def _text(self, text: str, now: float) -> None:
        self._on_event(self.protocol.receive(text, now), now)

    async def open(self, host: str, port: int, *, path: str, signature: str, parameters: Mapping[str, str]) -> None:
        """The signed handshake, then ``connected`` and ``start``."""
        headers = {"X-Twilio-Signature": signature}
        self._socket = await open_frame_socket(host, port, path, headers, self._text)
        self._socket.send(client_frame(self.protocol.connected()) + client_frame(self.protocol.start(parameters)))

    @property
    def closed(self) -> asyncio.Future[None]:
        assert self._socket is not None
        return self._socket.closed

    def send_media(self, payloads: Iterable[str]) -> None:
        """Frames of caller audio (base64 payloads) at once, ahead of the clock."""
        assert self._socket is not None
        self._socket.send(b"".join(client_frame(self.protocol.media(b64)) for b64 in payloads))

    def tick(self, now: float, b64: str) -> None:
        """The caller's next frame (``b64``) and every mark echo due by ``now``, in one write."""
        assert self._socket is not None
        frames = client_frame(self.protocol.media(b64))
        for echo in self.protocol.echoes(now):
            frames += client_frame(echo)
        self._socket.send(frames)

    def close(self) -> None:
        """Start the close handshake; ``closed`` resolves when the connection is gone."""
        assert self._socket is not None
        self._socket.send(CLOSE_FRAME)

    def hang_up(self) -> None:
        """The caller hung up: Twilio's ``stop``, then the close handshake."""
        assert self._socket is not None
        self._socket.send(client_frame(self.protocol.stop()) + CLOSE_FRAME)
