"""A cheap Twilio media-stream client for density benches (not for tests).

The bench client shares the machine's cores with the server it measures, so it spends as
little as it can per message: a raw asyncio ``Protocol`` speaking RFC 6455 by hand. It
sends pre-serialized frames with an all-zero mask key (legal; XOR with zero leaves the
payload as is, so nothing is masked in Python) and reads the server's unmasked frames
without JSON-decoding audio: a ``media`` message's audio length comes from its base64
length, a ``mark`` name is cut out of the text. Per received media message it keeps the
arrival time and the audio duration; that is all the gap and underrun figures need.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import Callable

_MEDIA = b'{"event":"media"'
_MARK = b'{"event":"mark"'
_CLEAR = b'{"event":"clear"'
_MARK_NAME = b'"name":"'


def client_frame(text: str) -> bytes:
    """A masked (all-zero key) text frame, ready to write."""
    data = text.encode()
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return head + b"\0\0\0\0" + data


CLOSE_FRAME = struct.pack("!BB", 0x88, 0x82) + b"\0\0\0\0" + struct.pack("!H", 1000)


class MediaClient(asyncio.Protocol):
    """One call's socket. ``on_media(now, audio_bytes)``, ``on_mark(now, name)`` and
    ``on_clear(now)`` are called per server message."""

    def __init__(
        self,
        on_media: Callable[[float, int], None],
        on_mark: Callable[[float, str], None],
        on_clear: Callable[[float], None],
    ) -> None:
        self._on_media, self._on_mark, self._on_clear = on_media, on_mark, on_clear
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._upgraded = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._time = asyncio.get_running_loop().time

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("closed before the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)

    def send(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

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
                self._message(buf, start, pos, now)
            elif opcode == 8:
                self.send(CLOSE_FRAME)
                assert self.transport is not None
                self.transport.close()
        del buf[:pos]

    def _message(self, buf: bytearray, start: int, end: int, now: float) -> None:
        if buf.startswith(_MEDIA, start):
            # {"event":"media","streamSid":"..","media":{"payload":"B64"}}: the payload runs
            # from after `"payload":"` to the closing `"}}`.
            p = buf.find(b'"payload":"', start, end) + 11
            b64 = end - 3 - p
            pad = (buf[end - 4] == 0x3D) + (buf[end - 5] == 0x3D)  # '='
            self._on_media(now, b64 // 4 * 3 - pad)
        elif buf.startswith(_MARK, start):
            p = buf.find(_MARK_NAME, start, end) + len(_MARK_NAME)
            q = buf.find(b'"', p, end)
            self._on_mark(now, buf[p:q].decode())
        elif buf.startswith(_CLEAR, start):
            self._on_clear(now)


async def open_media_client(
    host: str,
    port: int,
    path: str,
    headers: dict[str, str],
    on_media: Callable[[float, int], None],
    on_mark: Callable[[float, str], None],
    on_clear: Callable[[float], None],
) -> MediaClient:
    """Connect, upgrade to WebSocket, return the protocol once the server said 101."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: MediaClient(on_media, on_mark, on_clear), host, port)
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
    proto.send(("\r\n".join(lines) + "\r\n\r\n").encode())
    await proto.opened
    return proto


def mark_echo(stream_sid: str, seq: int, name: str) -> bytes:
    """Twilio's echo of a mark, as a ready frame."""
    return client_frame(
        json.dumps({"event": "mark", "sequenceNumber": str(seq), "streamSid": stream_sid, "mark": {"name": name}})
    )
