"""A small real HTTP/1.1 server on 127.0.0.1 that receives webhook POSTs (asyncio streams).

``answer(n)`` decides the status of the n-th request (0-based): an int, or ``None`` to hold
the request open until ``release`` is set (a dead receiver). Every request is kept, with the
raw body bytes the signature covers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    answer: Callable[[int], int | None] = lambda n: 200
    delay_s: float = 0.0
    requests: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    open_requests: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    key, _, value = h.decode().partition(":")
                    headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                got = Received(method, path, headers, body)
                n = len(self.requests)
                self.requests.append(got)
                self.arrived.set()
                status = self.answer(n)
                self.open_requests += 1
                try:
                    if status is None:
                        await self.release.wait()
                        status = 503
                    if self.delay_s:
                        await asyncio.sleep(self.delay_s)
                finally:
                    self.open_requests -= 1
                got.status = status
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.requests):
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), 0.1)
                except TimeoutError:
                    pass


@asynccontextmanager
async def receiver(**kwargs: Any) -> AsyncIterator[Receiver]:
    rec = Receiver(**kwargs)
    handlers: set[asyncio.Task[None]] = set()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await rec.handle(reader, writer)
        except asyncio.CancelledError:
            pass  # the receiver is shutting down (a kept-alive connection)
        finally:
            handlers.discard(task)

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    rec.port = server.sockets[0].getsockname()[1]
    try:
        yield rec
    finally:
        rec.release.set()
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
