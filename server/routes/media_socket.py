"""The media WebSocket on picows: Twilio's frames parsed in C, on the same port as the app.

Every call's socket carries 50 frames a second in. On uvicorn's own WebSocket protocol each
frame goes through the ``websockets`` parser, an ASGI message dict, a queue and Starlette's
state checks: ~1.2 ms of CPU per call-second of a whole call's ~6.2 (``bench.media_socket``:
1.16-1.40 ms for 150 sockets against 0.50 on picows). picows (MIT, a Cython WebSocket with
SIMD unmasking) does that work for the media socket; everything else stays on uvicorn.

How: uvicorn hands a WebSocket upgrade to the class named by its ``ws`` option
(``server.cli.uvicorn_options``): ``MediaWebSocketProtocol`` reads the request line and
passes the connection on, the request replayed into it, to picows for ``/twilio/media``
and to uvicorn's ``websockets-sansio`` protocol for every other path. picows' protocol is
built with its positional constructor, which ``ws_create_server`` uses and does not export
(hence the pin ``picows>=2.3,<2.4``).

picows then does the handshake: a bad ``X-Twilio-Signature`` is answered 403 before any
upgrade, as the Starlette route does. An accepted socket is a ``MediaSocket`` for
``server.routes.media.serve_stream`` (``start``, the stream token, the session): the
handshake's frames go to a deque read by ``receive``; once the session runs, it is a
``PushingSocket`` and takes each frame in ``on_ws_frame`` (``push_to``), with no reader task
woken per frame (``bench.media_socket``: 0.38-0.45 ms of CPU per call-second against 0.50
with a reader task). Fragmented messages are joined; a
message over ``MAX_MESSAGE`` bytes closes the socket with 1009. Pings are answered by
picows. The app (its settings and services) is the ``DialgraphApp`` under uvicorn's
middleware (``app_of``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import structlog
from picows import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSProtocol  # type: ignore[attr-defined]  # not in its stub: see the module docstring
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from dialgraph.server.core.security import SIGNATURE_HEADER
from dialgraph.server.routes.media import MEDIA_PATH, handshake_signed, serve_stream
from dialgraph.telephony.call.session import SocketClosed

log = structlog.get_logger(__name__)

MAX_MESSAGE = 1 << 16  # as uvicorn's ws_max_size (server.cli)
HANDSHAKE_TIMEOUT_S = 5.0
_PICOWS_LOG = logging.getLogger("picows.dialgraph")
_PATH = MEDIA_PATH.encode()


def app_of(config: Any) -> Any | None:
    """The FastAPI app under uvicorn's middleware (ProxyHeaders and the like wrap it as
    ``.app``); None when it is not dialgraph's (then the Starlette route serves the socket)."""
    app = config.loaded_app
    while getattr(app, "state", None) is None or not hasattr(app.state, "settings"):
        app = getattr(app, "app", None)
        if app is None:
            return None
    return app


class PicowsMediaSocket(WSListener):  # type: ignore[misc]
    """One media socket: picows' listener and the session's ``MediaSocket``."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._frames: collections.deque[str | bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._parts_type = WSMsgType.TEXT
        self._closed = False
        self._transport: WSTransport | None = None
        self._handler: Callable[[str | bytes | None], None] | None = None
        self.task: asyncio.Task[None] | None = None

    # --- picows (on the event loop, per frame) -------------------------------------------------
    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        self.task = asyncio.get_running_loop().create_task(self._serve())

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT and frame.fin and not self._parts:
            self._put(frame.get_payload_as_utf8_text())
        elif kind is WSMsgType.TEXT or kind is WSMsgType.BINARY or kind is WSMsgType.CONTINUATION:
            self._fragment(transport, frame)
        elif kind is WSMsgType.CLOSE:
            if not self._closed:
                transport.send_close(frame.get_close_code())
            self._gone()
            transport.disconnect()

    def _fragment(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not WSMsgType.CONTINUATION:
            if self._parts:  # a new message inside a fragmented one
                self._fail(transport, WSCloseCode.PROTOCOL_ERROR)
                return
            self._parts_type = frame.msg_type
        elif not self._parts:
            self._fail(transport, WSCloseCode.PROTOCOL_ERROR)
            return
        self._parts.append(frame.get_payload_as_bytes())
        self._parts_size += frame.payload_size
        if self._parts_size > MAX_MESSAGE:
            self._fail(transport, WSCloseCode.MESSAGE_TOO_BIG)
            return
        if frame.fin:
            data = b"".join(self._parts)
            self._parts, self._parts_size = [], 0
            if self._parts_type is WSMsgType.BINARY:
                self._put(data)
                return
            try:
                self._put(data.decode("utf-8"))
            except UnicodeDecodeError:
                self._fail(transport, WSCloseCode.INVALID_TEXT)

    def _fail(self, transport: WSTransport, code: WSCloseCode) -> None:
        if not self._closed:
            transport.send_close(code)
            transport.disconnect()
        self._gone()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._gone()

    def _put(self, message: str | bytes) -> None:
        if self._handler is not None:
            self._handler(message)
            return
        self._frames.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _gone(self) -> None:
        self._closed = True
        handler, self._handler = self._handler, None
        if handler is not None:
            handler(None)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- MediaSocket (the session's side) ------------------------------------------------------
    async def receive(self) -> str | bytes | None:
        while not self._frames:
            if self._closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._frames.popleft()

    def push_to(self, handler: Callable[[str | bytes | None], None] | None) -> None:
        """The session's ``PushingSocket`` side: each frame goes to ``handler`` from
        ``on_ws_frame``, so a frame costs no wakeup of a reader task (~1 of every call's 3
        callbacks per frame on the event loop)."""
        self._handler = handler
        if handler is None:
            return
        while self._frames and self._handler is handler:  # what came before, in order
            handler(self._frames.popleft())
        if self._closed and self._handler is handler:
            self._handler = None
            handler(None)

    async def send(self, text: str) -> None:
        if self._closed or self._transport is None:
            raise SocketClosed("media socket closed")
        self._transport.send(WSMsgType.TEXT, text.encode())

    async def close(self, code: int = 1000) -> None:
        if not self._closed and self._transport is not None:
            self._closed = True
            self._transport.send_close(WSCloseCode(code))
            self._transport.disconnect()

    async def _serve(self) -> None:
        try:
            await serve_stream(self._app, self)
        except Exception:
            log.exception("media socket failed")
            await self.close(1011)


def listener_for(app: Any, request: WSUpgradeRequest) -> Any:
    """picows' listener factory: the signature, then a socket for the call."""
    if request.path.split(b"?", 1)[0] != _PATH:
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(HTTPStatus.NOT_FOUND), None)
    if not handshake_signed(app.state.settings, request.headers.get(SIGNATURE_HEADER)):
        log.warning("media socket refused: bad handshake signature")
        return WSUpgradeResponseWithListener(WSUpgradeResponse.create_error_response(HTTPStatus.FORBIDDEN), None)
    return PicowsMediaSocket(app)


def picows_protocol(app: Any) -> Any:
    """picows' server-side protocol, as ``ws_create_server`` builds it."""
    return WSProtocol(
        None,  # host and port: client side only
        None,  # path: client side only
        False,  # the server side
        lambda request: listener_for(app, request),
        _PICOWS_LOG,
        True,  # disconnect on a listener exception
        HANDSHAKE_TIMEOUT_S,
        False,  # no auto ping: Twilio does not answer pings reliably
        20.0,
        20.0,
        WSAutoPingStrategy.PING_WHEN_IDLE,
        True,  # answer pings
        MAX_MESSAGE,
        None,  # extra headers
        16 * 1024,  # read buffer
    )


class MediaWebSocketProtocol(asyncio.Protocol):
    """uvicorn's ``ws`` protocol class: ``/twilio/media`` to picows, the rest to uvicorn's
    ``websockets-sansio``. uvicorn calls ``connection_made``, switches the transport to
    this protocol, then hands it the upgrade request; this switches it on again."""

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any], _loop: Any = None) -> None:
        self._config = config
        self._server_state = server_state
        self._app_state = app_state
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        target = data.split(b" ", 2)[1] if data.count(b" ", 0, 512) >= 2 else b""
        inner: Any
        app = app_of(self._config) if target.split(b"?", 1)[0] == _PATH else None
        if app is not None:
            inner = picows_protocol(app)
            inner.connection_made(transport)
            transport.set_protocol(inner)
            buffer = inner.get_buffer(len(data))
            if len(buffer) < len(data):  # an upgrade request over picows' 16 KiB buffer
                transport.close()
                return
            buffer[: len(data)] = data
            inner.buffer_updated(len(data))
        else:
            inner = WebSocketsSansIOProtocol(
                config=self._config, server_state=self._server_state, app_state=self._app_state
            )
            inner.connection_made(transport)
            transport.set_protocol(inner)
            inner.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # before any data: nothing was handed on
