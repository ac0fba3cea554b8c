"""What a call cost: the price table, the usage one call measured, and its breakdown.

**Prices** (``[prices]`` of ``dialgraph.toml``; ``DIALGRAPH_PRICES`` as JSON) are public list
prices in USD, as defaults the user overrides key by key (a ``[prices.llm]`` table with one
model keeps every other default). Sources, read on 2026-12-05 (list prices move: check them
and set your own, volume or contract rates included):

- Twilio Programmable Voice, US: inbound (local number) $0.0085/min, outbound $0.013/min,
  inbound to a toll-free number $0.022/min -- Twilio's own worked example in
  https://support.twilio.com/hc/en-us/articles/223183328-How-Volume-Pricing-works-at-Twilio ;
  Twilio rounds each call up to the next whole minute
  (https://www.twilio.com/en-us/changelog/billing-changes-for-voice-insights-advanced-features-usage-trunking :
  "Most Twilio Voice products are usage-based and round up to the minute ... a call that is
  1 minute and 18 seconds is charged for 2 minutes"). India (IN): no list price was found in
  the sources searched; the defaults below are estimates to override from
  https://www.twilio.com/en-us/voice/pricing/in . Media Streams: no separate per-minute
  charge was listed in the sources searched, so ``media_streams_per_minute`` is 0 (set it if
  your invoice shows one).
- Deepgram, streaming speech-to-text per audio minute: Nova-3 $0.0077, Nova-2 $0.0058, the
  pay-as-you-go streaming rates of https://deepgram.com/pricing as last known -- NOT confirmed
  by the pages found on 2026-12-05: a third-party summary
  (https://skillui.com/en/skill/show/jeremylongshore/claude-code-plugins-plus-skills/deepgram-cost-tuning)
  lists $0.0059 for streaming Nova-3, and batch Nova-3 is $0.0043: check and set yours.
- OpenAI per 1M tokens in/out: gpt-4o-mini $0.15/$0.60, gpt-4o $2.50/$10.00, gpt-4.1-mini
  $0.40/$1.60, gpt-4.1 $2.00/$8.00, gpt-4.1-nano $0.10/$0.40
  (https://platform.openai.com/docs/pricing, as summarised by https://deploybase.ai/articles/openai-pricing
  and https://aumiqx.com/ai-tools/openai-api-pricing-gpt4-costs-guide-2026 , 2026).
- ElevenLabs per 1k characters: Flash/Turbo v2.5 $0.05, Multilingual v2 (and v3) $0.10
  (https://developer.puter.com/tutorials/elevenlabs-api-pricing/ , June 2026, from
  https://elevenlabs.io/pricing/api ; plan tiers differ).
- The offline stack (whisper, piper, the offline model) costs 0.

**Usage** (``calls.usage``, JSON) is measured by the call's session(s) and the status
callback; ``CallMeter`` keeps it in memory during a stream (nothing per frame goes to the
database) and ``record_usage`` adds it to the call row when the stream ends, so a call with
several streams (reconnects) accumulates:

- ``stream_s``: seconds of Media Streams (every session of the call, summed);
- ``call_s``: the call's duration as Twilio reports it (``CallDuration`` of the final status
  callback); ``None`` until then;
- ``asr``: audio seconds sent to each recogniser (``"deepgram:nova-3"``, ``"offline"``);
- ``llm``: input/output tokens per model (usage metadata, streamed usage included);
- ``tts``: characters sent to each synthesiser (``"elevenlabs:eleven_flash_v2_5"``, ``"offline"``);
- ``direction`` and ``country`` (of our number inbound, of the callee outbound: ``calls.to_number``).

**Telephony** is billed per started minute of the call: ``ceil(call_s / 60)`` minutes at the
direction's rate for the country once Twilio has said how long the call lasted, and
``ceil(stream_s / 60)`` until then (an estimate: the stream starts a moment after the
answer). A transferred call's second leg (``<Dial>``) is not counted.

**Cost** (``calls.cost``, JSON, and ``calls.cost_total`` for SQL sums) is recomputed from the
usage and the price table in force each time the usage changes.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Float, cast, func, select, update
from sqlalchemy.exc import OperationalError

from dialgraph.server.core.db import Database
from dialgraph.server.core.live import CostRecorded, hub
from dialgraph.server.core.models import Call

CURRENCY: Literal["USD"] = "USD"
FREE = "offline"  # the offline stack's key in every price section
DEFAULT = "default"


class TelephonyPrice(BaseModel):
    """Per minute, by direction (one country)."""

    model_config = ConfigDict(extra="forbid")

    inbound: float = Field(ge=0, description="USD per minute received on a number of this country")
    outbound: float = Field(ge=0, description="USD per minute to a number of this country")


class TokenPrice(BaseModel):
    """Per 1M tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0, description="USD per 1M input tokens")
    output: float = Field(ge=0, description="USD per 1M output tokens")


def default_telephony() -> dict[str, TelephonyPrice]:
    return {
        "US": TelephonyPrice(inbound=0.0085, outbound=0.013),
        "CA": TelephonyPrice(inbound=0.0085, outbound=0.013),
        "IN": TelephonyPrice(inbound=0.0085, outbound=0.0447),  # estimate: not found in the sources searched
        DEFAULT: TelephonyPrice(inbound=0.0085, outbound=0.013),
    }


def default_asr() -> dict[str, float]:
    return {
        "deepgram:nova-3": 0.0077,
        "deepgram:nova-2": 0.0058,
        "deepgram": 0.0077,  # a Deepgram model not listed
        FREE: 0.0,
        DEFAULT: 0.0077,
    }


def default_llm() -> dict[str, TokenPrice]:
    return {
        "gpt-4o-mini": TokenPrice(input=0.15, output=0.60),
        "gpt-4o": TokenPrice(input=2.50, output=10.00),
        "gpt-4.1-nano": TokenPrice(input=0.10, output=0.40),
        "gpt-4.1-mini": TokenPrice(input=0.40, output=1.60),
        "gpt-4.1": TokenPrice(input=2.00, output=8.00),
        FREE: TokenPrice(input=0.0, output=0.0),
        DEFAULT: TokenPrice(input=0.40, output=1.60),
    }


def default_tts() -> dict[str, float]:
    return {
        "elevenlabs:eleven_flash_v2_5": 0.05,
        "elevenlabs:eleven_turbo_v2_5": 0.05,
        "elevenlabs:eleven_multilingual_v2": 0.10,
        "elevenlabs": 0.10,  # an ElevenLabs model not listed
        FREE: 0.0,
        DEFAULT: 0.10,
    }


_SECTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "telephony": default_telephony,
    "asr": default_asr,
    "llm": default_llm,
    "tts": default_tts,
}


class PriceTable(BaseModel):
    """``[prices]``: list prices in USD (see the module docstring for their sources).

    ``telephony`` is keyed by ISO country (``US``, ``IN``...), ``asr`` and ``tts`` by
    ``provider:model`` (then ``provider``), ``llm`` by model name (the longest key the name
    starts with: ``gpt-4o-mini-2024-07-18`` is ``gpt-4o-mini``); each falls back to its
    ``default`` entry, and ``offline`` is free. A table given in config is laid over the
    defaults, key by key."""

    model_config = ConfigDict(extra="forbid")

    currency: Literal["USD"] = CURRENCY
    telephony: dict[str, TelephonyPrice] = Field(default_factory=default_telephony)
    media_streams_per_minute: float = Field(default=0.0, ge=0, description="Twilio Media Streams, USD per minute")
    asr: dict[str, float] = Field(default_factory=default_asr, description="USD per audio minute")
    llm: dict[str, TokenPrice] = Field(default_factory=default_llm, description="USD per 1M tokens")
    tts: dict[str, float] = Field(default_factory=default_tts, description="USD per 1k characters")

    @model_validator(mode="before")
    @classmethod
    def _over_defaults(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        merged = dict(data)
        for name, defaults in _SECTIONS.items():
            given = merged.get(name)
            if isinstance(given, Mapping):
                merged[name] = {**defaults(), **given}
        return merged

    # --- look-ups --------------------------------------------------------------------------------
    def telephony_per_minute(self, direction: str, country: str) -> float:
        price = self.telephony.get(country) or self.telephony.get(DEFAULT)
        if price is None:
            return 0.0
        return price.outbound if direction == "outbound" else price.inbound

    def asr_per_minute(self, key: str) -> float:
        return _keyed(self.asr, key)

    def tts_per_1k_chars(self, key: str) -> float:
        return _keyed(self.tts, key)

    def llm_per_1m(self, model: str) -> TokenPrice:
        if model in self.llm:
            return self.llm[model]
        name = model.rpartition(":")[2] if model.rpartition(":")[2] in self.llm else model
        if name in self.llm:
            return self.llm[name]
        prefixes = [k for k in self.llm if name.startswith(k) and k != DEFAULT]
        if prefixes:
            return self.llm[max(prefixes, key=len)]
        return self.llm.get(DEFAULT) or TokenPrice(input=0.0, output=0.0)


def _keyed(table: Mapping[str, float], key: str) -> float:
    if key in table:
        return table[key]
    if key == FREE or key.startswith(FREE + ":"):
        return 0.0
    provider = key.partition(":")[0]
    if provider in table:
        return table[provider]
    return table.get(DEFAULT, 0.0)


# --- where a number is --------------------------------------------------------------------------
# Calling codes of the countries the price table names by default, longest first where they
# overlap; anything else prices as ``default``. +1 is US (Canada's area codes price the same).
_CALLING_CODES = (("+91", "IN"), ("+44", "GB"), ("+61", "AU"), ("+49", "DE"), ("+33", "FR"), ("+1", "US"))


def country_of(number: str) -> str:
    """The ISO country of an E.164 number, as far as the price table cares (else ``default``)."""
    for prefix, country in _CALLING_CODES:
        if number.startswith(prefix):
            return country
    return DEFAULT


# --- usage and cost (pure) ----------------------------------------------------------------------
def billed_minutes(seconds: float | None) -> int:
    """Twilio's rounding: every started minute counts."""
    if not seconds or seconds <= 0:
        return 0
    return math.ceil(seconds / 60 - 1e-9)


def empty_usage(direction: str = "inbound", country: str = DEFAULT) -> dict[str, Any]:
    return {
        "direction": direction,
        "country": country,
        "streams": 0,
        "stream_s": 0.0,
        "call_s": None,
        "asr": {},
        "llm": {},
        "tts": {},
    }


def merge_usage(base: Mapping[str, Any] | None, more: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with the counters of ``more`` added (a later stream of the same call); the
    direction and country stay ``base``'s when it has them."""
    if base:
        out = {k: v for k, v in base.items() if k not in ("asr", "llm", "tts")}
        out["asr"] = dict(base.get("asr") or {})
        out["tts"] = dict(base.get("tts") or {})
        out["llm"] = {k: dict(v) for k, v in (base.get("llm") or {}).items()}
    else:
        out = empty_usage(str(more.get("direction", "inbound")), str(more.get("country", DEFAULT)))
    out["streams"] = int(out.get("streams") or 0) + int(more.get("streams") or 0)
    out["stream_s"] = round(float(out.get("stream_s") or 0.0) + float(more.get("stream_s") or 0.0), 3)
    if more.get("call_s") is not None:
        out["call_s"] = more["call_s"]
    for section in ("asr", "tts"):
        for key, value in (more.get(section) or {}).items():
            out[section][key] = round(out[section].get(key, 0) + value, 3)
    for key, tokens in (more.get("llm") or {}).items():
        have = out["llm"].setdefault(key, {"input": 0, "output": 0})
        have["input"] = int(have.get("input", 0)) + int(tokens.get("input", 0))
        have["output"] = int(have.get("output", 0)) + int(tokens.get("output", 0))
    return out


COMPONENTS = ("telephony", "asr", "llm", "tts")  # the parts of a call's cost (compute_cost)


def compute_cost(usage: Mapping[str, Any], prices: PriceTable) -> dict[str, Any]:
    """The breakdown ``{"telephony", "asr", "llm", "tts", "total", "currency"}`` of ``usage``."""
    direction = str(usage.get("direction") or "inbound")
    country = str(usage.get("country") or DEFAULT)
    stream_s = float(usage.get("stream_s") or 0.0)
    call_s = usage.get("call_s")
    minutes = billed_minutes(float(call_s) if call_s is not None else stream_s)
    telephony = minutes * prices.telephony_per_minute(direction, country)
    telephony += billed_minutes(stream_s) * prices.media_streams_per_minute
    asr = sum(seconds / 60 * prices.asr_per_minute(key) for key, seconds in (usage.get("asr") or {}).items())
    tts = sum(chars / 1000 * prices.tts_per_1k_chars(key) for key, chars in (usage.get("tts") or {}).items())
    llm = 0.0
    for model, tokens in (usage.get("llm") or {}).items():
        price = prices.llm_per_1m(model)
        llm += tokens.get("input", 0) / 1e6 * price.input + tokens.get("output", 0) / 1e6 * price.output
    parts = {"telephony": telephony, "asr": asr, "llm": llm, "tts": tts}
    cost: dict[str, Any] = {k: round(v, 6) for k, v in parts.items()}
    cost["total"] = round(sum(parts.values()), 6)
    cost["currency"] = prices.currency
    return cost


class CallMeter:
    """One stream's usage, in memory (the session's; counters only, nothing per frame).

    ``asr_key`` / ``tts_key`` name the providers the call uses (``"deepgram:nova-3"``,
    ``"offline"``); the session reports stream time at the end, the reply reports TTS
    characters per phrase and model tokens per turn."""

    __slots__ = ("_clock", "_started", "asr_key", "country", "direction", "llm", "prices", "tts", "tts_key")

    def __init__(
        self,
        prices: PriceTable,
        *,
        direction: str,
        country: str,
        asr_key: str,
        tts_key: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prices = prices
        self.direction = direction
        self.country = country
        self.asr_key = asr_key
        self.tts_key = tts_key
        self.tts: dict[str, int] = {}
        self.llm: dict[str, dict[str, int]] = {}
        self._clock = clock
        self._started: float | None = None

    def start(self) -> None:
        self._started = self._clock()

    def stream_seconds(self) -> float:
        return 0.0 if self._started is None else max(0.0, self._clock() - self._started)

    def add_tts(self, chars: int, key: str | None = None) -> None:
        k = key or self.tts_key
        self.tts[k] = self.tts.get(k, 0) + chars

    def add_tokens(self, model: str, input_tokens: int, output_tokens: int) -> None:
        have = self.llm.setdefault(model or DEFAULT, {"input": 0, "output": 0})
        have["input"] += input_tokens
        have["output"] += output_tokens

    def usage(self, *, asr_seconds: float) -> dict[str, Any]:
        """What this stream used (``asr_seconds``: the audio the session pushed to the recogniser)."""
        out = empty_usage(self.direction, self.country)
        out["streams"] = 1
        out["stream_s"] = round(self.stream_seconds(), 3)
        out["asr"] = {self.asr_key: round(asr_seconds, 3)} if asr_seconds > 0 else {}
        out["llm"] = {k: dict(v) for k, v in self.llm.items()}
        out["tts"] = dict(self.tts)
        return out

    def running_total(self, *, asr_seconds: float) -> float:
        """This stream's cost so far (before each caller turn: a few dict look-ups)."""
        return float(compute_cost(self.usage(asr_seconds=asr_seconds), self.prices)["total"])


# --- spend caps -----------------------------------------------------------------------------------
@dataclass(slots=True)
class SpendCap:
    """A call's view of its budgets: what the caller and the deployment had spent today
    before this stream (read once when it opens) and the caps (0: none)."""

    caller_budget: float = 0.0
    deployment_budget: float = 0.0
    caller_spent: float = 0.0
    deployment_spent: float = 0.0
    tripped: str | None = field(default=None)

    def check(self, running: float) -> str | None:
        """The rule whose budget ``running`` (this stream's cost so far) has spent, if any;
        once tripped it stays tripped for the rest of the stream."""
        if self.tripped is None:
            self.tripped = self.spent(running)
        return self.tripped

    def spent(self, running: float) -> str | None:
        """The rule whose budget ``running`` would have spent (``check`` without tripping)."""
        if self.caller_budget and self.caller_spent + running >= self.caller_budget:
            return "limits.caller_daily_budget"
        if self.deployment_budget and self.deployment_spent + running >= self.deployment_budget:
            return "limits.deployment_daily_budget"
        return None


def day_start(now: dt.datetime) -> dt.datetime:
    """Midnight UTC of ``now``'s day: a "daily" budget is a UTC calendar day."""
    return now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def spent_today(db: Database, *, caller: str | None, now: dt.datetime) -> tuple[float, float]:
    """What ``caller`` (None: skip) and the whole deployment spent on calls started today
    (UTC), one statement (``ix_calls_from_started`` and ``ix_calls_started``)."""
    since = day_start(now)
    total = func.coalesce(func.sum(Call.cost_total), 0.0)
    deployment = select(total).where(Call.started_at >= since).scalar_subquery()
    mine = (
        select(total).where(Call.from_number == caller, Call.started_at >= since).scalar_subquery()
        if caller
        else select(cast(0.0, Float)).scalar_subquery()
    )
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(mine.label("caller"), deployment.label("deployment")))).one()
    return float(row.caller or 0.0), float(row.deployment or 0.0)


# --- the call row ---------------------------------------------------------------------------------
async def record_usage(
    db: Database,
    sid: str,
    prices: PriceTable,
    *,
    add: Mapping[str, Any] | None = None,
    call_s: float | None = None,
) -> dict[str, Any] | None:
    """Add a stream's usage (``add``) and/or Twilio's call duration (``call_s``) to the call
    row, and store the cost recomputed from the whole; one transaction with the row locked
    (a session ending, a reconnected one and the status callback may race). Returns the cost
    (None: no such call)."""
    for attempt in range(3):
        try:
            async with db.sessionmaker() as s, s.begin():
                # Take the row's write lock before reading it: SQLite's driver only opens its
                # transaction at the first write (a plain SELECT first would read without one,
                # and two writers would each add to the same old value); PostgreSQL locks the row.
                await s.execute(update(Call).where(Call.sid == sid).values(cost_total=Call.cost_total))
                call = (await s.execute(select(Call).where(Call.sid == sid).with_for_update())).scalar_one_or_none()
                if call is None:
                    return None
                outbound = str(call.direction).startswith("outbound")
                base = (
                    dict(call.usage)
                    if call.usage
                    else empty_usage("outbound" if outbound else "inbound", country_of(call.to_number))
                )
                usage = merge_usage(base, add) if add else base
                if call_s is not None:
                    usage["call_s"] = round(float(call_s), 3)
                cost = compute_cost(usage, prices)
                before: dict[str, Any] = dict(call.cost or {})
                flow = str(call.flow or "")
                call.usage = usage
                call.cost = cost
                call.cost_total = cost["total"]
            added = tuple((k, max(0.0, float(cost[k]) - float(before.get(k) or 0.0))) for k in COMPONENTS)
            hub.notify(CostRecorded(flow, added, str(cost["currency"]), sid))  # /metrics, committed
            return cost
        except OperationalError:  # SQLite: a concurrent writer invalidated our read; try again
            if attempt == 2:
                raise
    return None


# --- daily totals ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DailyTotal:
    day: str  # YYYY-MM-DD (UTC)
    flow: str
    calls: int
    minutes: float  # billed telephony minutes, summed
    telephony: float
    asr: float
    llm: float
    tts: float
    total: float


async def daily_totals(db: Database, *, start: dt.date, end: dt.date, flow: str | None = None) -> list[DailyTotal]:
    """Per UTC day and flow, calls started from ``start`` to ``end`` (inclusive) that have a
    cost: how many, their billed minutes and the breakdown. Sums in SQL over
    ``cost_total``; the breakdown and minutes come from the rows of the range (a day's
    rows are few: one per call)."""
    since = dt.datetime.combine(start, dt.time(), dt.UTC)
    until = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC)
    query = select(Call.started_at, Call.flow, Call.usage, Call.cost).where(
        Call.started_at >= since, Call.started_at < until, Call.cost_total.is_not(None)
    )
    if flow:
        query = query.where(Call.flow == flow)
    totals: dict[tuple[str, str], dict[str, float]] = {}
    async with db.sessionmaker() as s:
        for started, flow_name, usage, cost in (await s.execute(query.order_by(Call.started_at))).all():
            day = started.astimezone(dt.UTC).date().isoformat()
            t = totals.setdefault(
                (day, flow_name),
                {"calls": 0, "minutes": 0, "telephony": 0.0, "asr": 0.0, "llm": 0.0, "tts": 0.0, "total": 0.0},
            )
            t["calls"] += 1
            u: dict[str, Any] = dict(usage or {})
            c: dict[str, Any] = dict(cost or {})
            t["minutes"] += billed_minutes(u["call_s"] if u.get("call_s") is not None else u.get("stream_s"))
            for k in ("telephony", "asr", "llm", "tts", "total"):
                t[k] += float(c.get(k) or 0.0)
    return [
        DailyTotal(
            day=day,
            flow=flow_name,
            calls=int(t["calls"]),
            minutes=float(t["minutes"]),
            **{k: round(t[k], 6) for k in ("telephony", "asr", "llm", "tts", "total")},
        )
        for (day, flow_name), t in sorted(totals.items())
    ]
