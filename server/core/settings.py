"""dialgraph settings: the one place configuration is read.

Secrets come only from the environment (``SecretStr``); everything else may also come from
a ``dialgraph.toml`` named by ``DIALGRAPH_CONFIG`` (see ``dialgraph.toml.example``).
Precedence, highest first: constructor arguments, environment, TOML file, defaults.

Settings are built once at the composition root (``create_app(settings)``, the CLI) and
handed down as constructor arguments; no other module reads the environment.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

SECRET_FIELDS = (
    "twilio_auth_token",
    "deepgram_api_key",
    "elevenlabs_api_key",
    "openai_api_key",
    "admin_token",
    "stream_token_secret",
)

# Values that mean "nobody set this": refused in production mode.
_PLACEHOLDERS = re.compile(
    r"^(|changeme|change-me|changethis|secret|test|dev|xxx+|your[-_ ].*|placeholder|\.\.\.)$", re.I
)

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class TransferTarget(BaseModel):
    """A human the agent may hand a caller to. Only these can ever be dialled."""

    model_config = ConfigDict(extra="forbid")

    number: str = Field(pattern=r"^\+[1-9]\d{6,14}$", description="E.164 number to <Dial>")
    description: str = ""
    timeout_s: int = Field(default=20, ge=5, le=120, description="ring time before giving up")


class FlowSettings(BaseModel):
    """One call flow: which graph runs it and how it talks, books and hands over."""

    model_config = ConfigDict(extra="forbid")

    graph: str = Field(default="", description="registry name of the graph factory; defaults to the flow's key")
    prompt: str = ""
    greeting: str | None = None
    voice: str | None = None
    tts_model: str | None = None
    language: str = "en"
    company: str = "Acme Dental"
    transfer_targets: dict[str, TransferTarget] = Field(default_factory=dict)
    timezone: str = "UTC"
    business_hours: dict[str, str] = Field(
        default_factory=lambda: {d: "09:00-17:00" for d in WEEKDAYS[:5]},
        description="weekday (mon..sun) -> 'HH:MM-HH:MM' local time; missing days are closed",
    )
    slot_minutes: int = Field(default=30, ge=5, le=480)
    buffer_minutes: int = Field(default=0, ge=0, le=240)
    knowledge_file: Path | None = None
    dtmf_transfer: dict[str, str] = Field(
        default_factory=dict, description="DTMF digit -> transfer target name, e.g. {'0': 'front_desk'}"
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @field_validator("tts_model")
    @classmethod
    def _model_id(cls, v: str | None) -> str | None:
        """Blank means the provider's default model. Anything else must look like a model id,
        so a malformed name (spaces, slashes, a URL) fails at start-up instead of going into
        the vendor's URL on every reply of the flow; a well-formed but unknown id is the
        vendor's to refuse (and the TTS fallback's to cover)."""
        if v is None or not v.strip():
            return None
        if not _MODEL_ID.match(v.strip()):
            raise ValueError(f"tts_model {v!r} is not a model id (like 'eleven_flash_v2_5')")
        return v.strip()

    @field_validator("business_hours")
    @classmethod
    def _hours(cls, v: dict[str, str]) -> dict[str, str]:
        for day, span in v.items():
            if day not in WEEKDAYS:
                raise ValueError(f"business_hours: unknown weekday {day!r} (use {', '.join(WEEKDAYS)})")
            if not _HHMM.match(span):
                raise ValueError(f"business_hours[{day}]: {span!r} is not 'HH:MM-HH:MM'")
            start, end = span.split("-")
            if start >= end:
                raise ValueError(f"business_hours[{day}]: {span!r} ends before it starts")
        return v

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def hours_on(self, day: dt.date) -> tuple[dt.time, dt.time] | None:
        """Opening and closing local time on ``day``, or None when closed."""
        span = self.business_hours.get(WEEKDAYS[day.weekday()])
        if span is None:
            return None
        start, end = span.split("-")
        close = dt.time.max if end == "24:00" else dt.time.fromisoformat(end)
        return dt.time.fromisoformat(start), close


def _default_flows() -> dict[str, FlowSettings]:
    return {
        "scheduling": FlowSettings(
            transfer_targets={"front_desk": TransferTarget(number="+15550100001", description="front desk")},
            dtmf_transfer={"0": "front_desk"},
        ),
        "support": FlowSettings(
            transfer_targets={
                "billing": TransferTarget(number="+15550100002", description="billing team"),
                "support": TransferTarget(number="+15550100003", description="technical support"),
            },
            dtmf_transfer={"0": "support"},
        ),
        "sales": FlowSettings(
            transfer_targets={"sales": TransferTarget(number="+15550100004", description="sales team")},
            dtmf_transfer={"0": "sales"},
        ),
    }


# Environment variable of each field; any other field may be set as DIALGRAPH_<FIELD>.
ENV_NAMES: dict[str, str] = {
    "env": "DIALGRAPH_ENV",
    "config_file": "DIALGRAPH_CONFIG",
    "data_dir": "DIALGRAPH_DATA_DIR",
    "public_url": "DIALGRAPH_PUBLIC_URL",
    "database_url": "DATABASE_URL",
    "log_level": "DIALGRAPH_LOG_LEVEL",
    "twilio_account_sid": "TWILIO_ACCOUNT_SID",
    "twilio_auth_token": "TWILIO_AUTH_TOKEN",
    "twilio_api_url": "TWILIO_API_URL",
    "validate_signatures": "DIALGRAPH_VALIDATE_SIGNATURES",
    "stream_token_secret": "DIALGRAPH_STREAM_TOKEN_SECRET",
    "admin_token": "DIALGRAPH_ADMIN_TOKEN",
    "deepgram_api_key": "DEEPGRAM_API_KEY",
    "deepgram_url": "DEEPGRAM_URL",
    "elevenlabs_api_key": "ELEVENLABS_API_KEY",
    "elevenlabs_url": "ELEVENLABS_URL",
    "openai_api_key": "OPENAI_API_KEY",
    "openai_base_url": "OPENAI_BASE_URL",
    "model": "DIALGRAPH_MODEL",
    "asr": "DIALGRAPH_ASR",
    "tts": "DIALGRAPH_TTS",
}


class Settings(BaseSettings):
    """The whole configuration of one dialgraph instance."""

    model_config = SettingsConfigDict(
        extra="forbid",
        case_sensitive=False,
        env_ignore_empty=True,
    )

    # --- where and how it runs -----------------------------------------------------------
    env: Literal["dev", "production"] = Field(default="dev")
    config_file: Path | None = Field(default=None)
    data_dir: Path = Field(default=Path("data"))
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="base URL Twilio reaches; signs webhooks and builds the stream URL",
    )
    database_url: str | None = Field(default=None)
    log_level: str = Field(default="INFO")

    # --- Twilio --------------------------------------------------------------------------
    twilio_account_sid: str = Field(default="AC00000000000000000000000000000000")
    twilio_auth_token: SecretStr = Field(default=SecretStr(""))
    twilio_api_url: str | None = Field(default=None)
    validate_signatures: bool = Field(
        default=True,
        description="dev only: false turns Twilio signature checks off (logged loudly)",
    )
    stream_token_secret: SecretStr = Field(default=SecretStr(""))
    stream_token_ttl_s: int = Field(default=120, ge=10, le=3600)
    admin_token: SecretStr = Field(default=SecretStr(""))

    # --- providers -----------------------------------------------------------------------
    deepgram_api_key: SecretStr = Field(default=SecretStr(""))
    deepgram_url: str | None = Field(default=None)
    deepgram_model: str = "nova-3"
    elevenlabs_api_key: SecretStr = Field(default=SecretStr(""))
    elevenlabs_url: str | None = Field(default=None)
    elevenlabs_voice: str = "21m00Tcm4TlvDq8ikWAM"
    elevenlabs_model: str = "eleven_flash_v2_5"
    openai_api_key: SecretStr = Field(default=SecretStr(""))
    openai_base_url: str | None = Field(default=None)
    model: str = Field(
        default="offline",
        description="'offline', 'openai:<model>' or 'openai-compatible:<base_url>/<model>'",
    )
    asr: Literal["auto", "deepgram", "offline"] = Field(default="auto")
    tts: Literal["auto", "elevenlabs", "offline"] = Field(default="auto")
    speech_workers: int = Field(default=2, ge=1, le=64, description="bound of the offline speech worker pool")

    # --- calls ---------------------------------------------------------------------------
    numbers: dict[str, str] = Field(default_factory=dict, description="dialled E.164 number -> flow name")
    default_flow: str = "scheduling"
    flows: dict[str, FlowSettings] = Field(default_factory=_default_flows)
    barge_in_min_ms: int = Field(default=200, ge=0, le=2000)
    barge_in_min_words: int = Field(default=0, ge=0, le=10)
    playback_lead_ms: int = Field(
        default=200, ge=20, le=200, description="audio sent ahead of real time; 200: 100 ms messages, 120: 20 ms"
    )
    max_reconnects: int = Field(default=3, ge=0, le=20)
    callback_window_hours: float = Field(default=72, ge=0)
    checkpoint_retention_days: float = Field(default=30, gt=0)
    durability: Literal["async", "sync", "exit"] = "async"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env = _EnvSource(settings_cls)
        return (init_settings, env, _TomlSource(settings_cls, init_settings(), env()))

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for number, flow_name in self.numbers.items():
            if flow_name not in self.flows:
                raise ValueError(f"numbers[{number!r}] names unknown flow {flow_name!r}")
        if self.default_flow not in self.flows:
            raise ValueError(f"default_flow {self.default_flow!r} is not in flows")
        for name, flow in self.flows.items():
            if not flow.graph:
                flow.graph = name
            for digit, target in flow.dtmf_transfer.items():
                if target not in flow.transfer_targets:
                    raise ValueError(f"flows.{name}.dtmf_transfer[{digit!r}] names unknown target {target!r}")
        if not self.public_url.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        self.public_url = self.public_url.rstrip("/")
        if self.env == "production":
            self._refuse_placeholders()
        else:
            if not self.twilio_auth_token.get_secret_value():
                self.twilio_auth_token = SecretStr("dev-auth-token")
            if not self.stream_token_secret.get_secret_value():
                self.stream_token_secret = SecretStr("dev-stream-token-secret")
            if not self.admin_token.get_secret_value():
                self.admin_token = SecretStr("dev-admin-token")
        return self

    def _refuse_placeholders(self) -> None:
        bad = [
            name
            for name in ("twilio_auth_token", "stream_token_secret", "admin_token")
            if _PLACEHOLDERS.match(getattr(self, name).get_secret_value())
            or len(getattr(self, name).get_secret_value()) < 16
        ]
        if bad:
            raise ValueError(
                "production mode refuses empty or placeholder secrets (need >= 16 characters): " + ", ".join(bad)
            )
        if not self.validate_signatures:
            raise ValueError("production mode refuses validate_signatures = false")
        if not self.public_url.startswith("https://"):
            raise ValueError("production mode needs an https:// public_url (Twilio streams need wss)")

    # --- derived -------------------------------------------------------------------------
    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.data_dir / 'dialgraph.db').resolve()}"

    @property
    def stream_url(self) -> str:
        """The media WebSocket URL Twilio connects to (http -> ws, https -> wss)."""
        base = self.public_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return f"{base}/twilio/media"

    @property
    def asr_provider(self) -> Literal["deepgram", "offline"]:
        if self.asr == "auto":
            return "deepgram" if self.deepgram_api_key.get_secret_value() else "offline"
        return self.asr

    @property
    def tts_provider(self) -> Literal["elevenlabs", "offline"]:
        if self.tts == "auto":
            return "elevenlabs" if self.elevenlabs_api_key.get_secret_value() else "offline"
        return self.tts

    @property
    def model_spec(self) -> str:
        """The chat model actually used: an OpenAI key or base URL upgrades 'offline'."""
        if self.model == "offline" and self.openai_base_url:
            return f"openai-compatible:{self.openai_base_url.rstrip('/')}/default"
        return self.model

    def flow_for_number(self, dialled: str) -> str:
        return self.numbers.get(dialled, self.default_flow)

    def flow(self, name: str) -> FlowSettings:
        return self.flows[name]

    def public(self) -> dict[str, Any]:
        """The effective configuration with secrets masked (for `dialgraph config check`)."""
        data = self.model_dump(mode="json")
        for name in SECRET_FIELDS:
            value = getattr(self, name).get_secret_value()
            data[name] = f"****{value[-2:]}" if len(value) >= 12 else ("****" if value else "")
        data["effective_database_url"] = mask_url(self.effective_database_url)
        if data.get("database_url"):
            data["database_url"] = mask_url(data["database_url"])
        data["providers"] = {"asr": self.asr_provider, "tts": self.tts_provider, "model": self.model_spec}
        return data


def normalise_database_url(url: str) -> str:
    """Map plain URLs to the async drivers we ship: psycopg 3 and aiosqlite."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.split(":///", 1)[1]
    return url


def mask_url(url: str) -> str:
    return re.sub(r"//([^:/@]+):([^@]+)@", r"//\1:****@", url)


class _EnvSource(PydanticBaseSettingsSource):
    """Environment variables by the names in ``ENV_NAMES`` (else ``DIALGRAPH_<FIELD>``),
    returned under field names so they merge cleanly with constructor and TOML values."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        environ = {k.upper(): v for k, v in os.environ.items()}
        out: dict[str, Any] = {}
        for name in self.settings_cls.model_fields:
            value = environ.get(ENV_NAMES.get(name, f"DIALGRAPH_{name.upper()}"))
            if value is None or value == "":
                continue
            if value[:1] in "{[":
                try:
                    out[name] = json.loads(value)
                    continue
                except json.JSONDecodeError:
                    pass
            out[name] = value
        return out


class _TomlSource(PydanticBaseSettingsSource):
    """Reads the TOML file named by the config_file argument or DIALGRAPH_CONFIG."""

    def __init__(self, settings_cls: type[BaseSettings], init: dict[str, Any], env: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._path = init.get("config_file") or env.get("config_file")

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if not self._path:
            return {}
        path = Path(self._path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ValueError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {path}: {exc}") from exc
        leaked = sorted(set(data) & set(SECRET_FIELDS))
        if leaked:
            raise ValueError(f"config file {path} holds secrets ({', '.join(leaked)}): set them in the environment")
        # Relative paths in the file are relative to the file.
        for flow in (data.get("flows") or {}).values():
            if isinstance(flow, dict) and flow.get("knowledge_file"):
                kf = Path(flow["knowledge_file"])
                flow["knowledge_file"] = str(kf if kf.is_absolute() else path.parent / kf)
        return data
