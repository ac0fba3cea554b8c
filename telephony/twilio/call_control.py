"""Call control through Twilio's REST API: hang up, move a live call, place a call, read a
call's status.

Uses twilio-python's ``AsyncTwilioHttpClient`` and the ``*_async`` methods, so nothing blocks
the event loop. Hang-up, redirect and fetch are idempotent and retried once on a retryable failure;
placing a call is never retried (a retry after a lost answer could ring someone twice).

Errors: every failure surfaces as ``CallControlError`` with ``retryable`` (5xx, 429, network)
and, when Twilio said so, its HTTP ``status`` and error ``code``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import structlog
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from dialgraph.server.core.settings import Settings

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Twilio error codes meaning "the call is not there / not live any more": never retryable.
CALL_NOT_LIVE_CODES = frozenset({20404, 21220})


class CallControlError(Exception):
    """A Twilio REST operation failed. ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.code = code

    @property
    def call_not_live(self) -> bool:
        """The call does not exist or has already ended."""
        return self.status == 404 or self.code in CALL_NOT_LIVE_CODES


class CallControl:
    """Twilio REST operations on calls. Build with ``build_call_control``; ``aclose()`` it."""

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        api_url: str | None = None,
        timeout_s: float = 10.0,
        retry_delay_s: float = 0.2,
    ) -> None:
        self._account_sid = account_sid
        self._auth_token = auth_token
        self._api_url = api_url.rstrip("/") if api_url else None
        self._timeout_s = timeout_s
        self._retry_delay_s = retry_delay_s
        self._http: AsyncTwilioHttpClient | None = None
        self._client: Client | None = None

    def _rest(self) -> Client:
        # Built lazily: aiohttp's session must be created inside the running loop.
        if self._client is None:
            self._http = AsyncTwilioHttpClient(timeout=self._timeout_s)
            self._client = Client(self._account_sid, self._auth_token, http_client=self._http)
            if self._api_url:
                self._client.api.base_url = self._api_url
        return self._client

    async def hangup(self, call_sid: str) -> None:
        """End a live call (REST ``Status=completed``)."""
        await self._idempotent(
            "hangup", call_sid, lambda: self._rest().calls(call_sid).update_async(status="completed")
        )

    async def redirect(self, call_sid: str, twiml: str) -> None:
        """Replace what a live call is doing with ``twiml``. A streamed call's media socket then
        receives ``stop``: the session must not hang the call up while cleaning up."""
        await self._idempotent("redirect", call_sid, lambda: self._rest().calls(call_sid).update_async(twiml=twiml))

    async def fetch_status(self, call_sid: str) -> tuple[str, str | None]:
        """The call's ``status`` (queued, ringing, in-progress, completed, busy, no-answer,
        failed, canceled) and ``answered_by`` (AMD's verdict, None when there is none).
        A call Twilio does not know raises ``CallControlError`` with ``call_not_live``."""
        call = await self._idempotent("fetch", call_sid, lambda: self._rest().calls(call_sid).fetch_async())
        return str(call.status or ""), call.answered_by or None

    async def find_calls(self, to: str, *, since: dt.datetime, limit: int = 20) -> list[tuple[str, str, str | None]]:
        """Calls to ``to`` created at or after ``since``, newest first, as (sid, status,
        answered_by): whether a create whose answer was lost (its instance died) reached
        Twilio. Filtered on ``date_created``: a queued call has no start time yet."""

        async def listed() -> list[Any]:
            return await self._rest().calls.list_async(to=to, limit=limit)

        calls = await self._idempotent("list", "-", listed)
        since_s = since.replace(microsecond=0)  # Twilio's times are to the second
        return [
            (str(c.sid), str(c.status or ""), c.answered_by or None)
            for c in calls
            if c.date_created is not None and c.date_created >= since_s
        ]

    async def place_call(
        self,
        *,
        to: str,
        from_: str,
        url: str,
        status_callback: str,
        machine_detection: str | None = None,
        async_amd: bool = False,
        async_amd_status_callback: str | None = None,
        timeout_s: int | None = None,
        status_callback_event: tuple[str, ...] = ("initiated", "ringing", "answered", "completed"),
    ) -> str:
        """Start an outbound call whose TwiML comes from ``url``; returns its CallSid."""
        kwargs: dict[str, object] = {
            "to": to,
            "from_": from_,
            "url": url,
            "status_callback": status_callback,
            "status_callback_event": list(status_callback_event),
        }
        if machine_detection:
            kwargs["machine_detection"] = machine_detection
            if async_amd:
                kwargs["async_amd"] = "true"
                if async_amd_status_callback:
                    kwargs["async_amd_status_callback"] = async_amd_status_callback
        if timeout_s is not None:
            kwargs["timeout"] = timeout_s
        try:
            call = await self._rest().calls.create_async(**kwargs)  # type: ignore[arg-type]
        except Exception as exc:
            raise _translate("place_call", exc) from exc
        sid: str = call.sid or ""
        log.info("call placed", call_sid=sid, to_number=to)
        return sid

    async def _idempotent(self, action: str, call_sid: str, op: Callable[[], Awaitable[T]]) -> T:
        for attempt in (1, 2):
            try:
                result = await op()
            except Exception as exc:
                error = _translate(action, exc)
                if not error.retryable or attempt == 2:
                    log.warning(
                        "call control failed",
                        action=action,
                        call_sid=call_sid,
                        status=error.status,
                        code=error.code,
                        retryable=error.retryable,
                    )
                    raise error from exc
                await asyncio.sleep(self._retry_delay_s)
            else:
                log.info("call control done", action=action, call_sid=call_sid, attempt=attempt)
                return result
        raise AssertionError("unreachable")  # the loop returns or raises

    async def aclose(self) -> None:
        """Close the HTTP session. Idempotent."""
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.close()


def _translate(action: str, exc: BaseException) -> CallControlError:
    if isinstance(exc, TwilioRestException):
        status = int(exc.status)
        retryable = status >= 500 or status == 429
        return CallControlError(
            f"{action}: Twilio answered {status} (code {exc.code})", retryable=retryable, status=status, code=exc.code
        )
    if isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | OSError):
        return CallControlError(f"{action}: {type(exc).__name__} talking to Twilio", retryable=True)
    if isinstance(exc, TwilioException):
        return CallControlError(f"{action}: {exc}", retryable=False)
    if isinstance(exc, CallControlError):
        return exc
    raise exc


def build_call_control(settings: Settings) -> CallControl:
    """The app's ``CallControl``; points at ``settings.twilio_api_url`` when set (a fake)."""
    return CallControl(
        account_sid=settings.twilio_account_sid,
        auth_token=settings.twilio_auth_token.get_secret_value(),
        api_url=settings.twilio_api_url,
    )
