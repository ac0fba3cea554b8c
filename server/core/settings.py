"""dialgraph settings: the one place configuration is read.

Secrets come only from the environment (``SecretStr``); everything else may also come from
a ``dialgraph.toml`` named by ``DIALGRAPH_CONFIG`` or the ``config_file`` argument (see
``dialgraph.toml.example``). Precedence, highest first: constructor arguments, environment,
TOML file, defaults. Every field may be set as ``DIALGRAPH_<FIELD>``; the documented names
(``DIALGRAPH_CONFIG`` and the vendors' ``DATABASE_URL``, ``TWILIO_AUTH_TOKEN``,
``OPENAI_API_KEY``...) are validation aliases, and win when both are set.

Settings are built once at the composition root (``create_app(settings)``, the CLI) and
handed down as constructor arguments; no other module reads the environment.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from dialgraph.server.core.flow_config import E164, CallingWindow, DltFields, FlowSettings, default_flows
from dialgraph.server.core.limits import Limits
from dialgraph.server.core.redaction import RedactionSettings

CONFIG_ENV = "DIALGRAPH_CONFIG"

# Dev mode fills these in when unset; `dialgraph serve` refuses to expose dev mode beyond
# loopback, and production mode refuses them.
DEV_SECRETS = {
    "twilio_auth_token": "dev-auth-token",
    "stream_token_secret": "dev-stream-token-secret",
    "admin_token": "dev-admin-token",
}

# Values that mean "nobody set this": refused in production mode.
_PLACEHOLDERS = re.compile(
    r"^(|changeme|change-me|changethis|secret|test|dev|xxx+|your[-_ ].*|placeholder|\.\.\.)$", re.I
)


class OutboundSettings(BaseModel):
    """``[outbound]``: how calls are placed, and the compliance defaults they obey."""

    model_config = ConfigDict(extra="forbid")

    default_from: str | None = Field(default=None, pattern=E164, description="caller ID when none is given")
    ring_timeout_s: int = Field(default=30, ge=5, le=600, description="Twilio's `timeout`: ring this long")
    machine_detection: Literal["DetectMessageEnd", "Enable", "off"] = "DetectMessageEnd"
    unknown_is_human: bool = Field(default=True, description="AnsweredBy=unknown: talk (true) or leave voicemail")
    window: CallingWindow = Field(default_factory=CallingWindow, description="local calling hours of the callee")
    promotional_prefixes: list[str] = Field(
        default_factory=lambda: ["+91140"], description="promotional calls to +91 must come from these series"
    )
    dlt: DltFields = Field(default_factory=DltFields, description="deployment-wide DLT facts (+91 callees)")
    account_calls_per_second: float = Field(default=1.0, gt=0, le=100, description="Twilio account CPS, all instances")
    claim_ttl_s: float = Field(default=60, gt=0, description="a claimed, undialled contact returns to the queue")
    stale_call_s: float = Field(default=120, gt=0, description="a call not heard of this long is checked over REST")
    dispatch_interval_s: float = Field(default=0.25, gt=0, le=60)
    dispatcher: bool = Field(default=True, description="run the campaign dispatcher in this instance")


class LimitsSettings(Limits):
    """``[limits]``: guardrails shared by all instances (state in SQL); a flow overrides any
    key under ``[flows.NAME.limits]``. The keys and what they limit: ``server/core/limits.py``."""


class Settings(BaseSettings):
    """The whole configuration of one dialgraph instance."""

    model_config = SettingsConfigDict(
        extra="forbid",
        case_sensitive=False,
        env_prefix="DIALGRAPH_",
        env_ignore_empty=True,
        validate_by_name=True,
        hide_input_in_errors=True,  # an error must not print the secrets it was given
    )

    # --- where and how it runs -----------------------------------------------------------
    env: Literal["dev", "production"] = Field(default="dev")
    config_file: Path | None = Field(default=None, validation_alias=CONFIG_ENV)
    data_dir: Path = Field(default=Path("data"))
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="base URL Twilio reaches; signs webhooks and builds the stream URL",
    )
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    log_level: str = Field(default="INFO")

    # --- Twilio --------------------------------------------------------------------------
    twilio_account_sid: str = Field(default="AC00000000000000000000000000000000", validation_alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: SecretStr = Field(default=SecretStr(""), validation_alias="TWILIO_AUTH_TOKEN")
    twilio_api_url: str | None = Field(default=None, validation_alias="TWILIO_API_URL")
    validate_signatures: bool = Field(
        default=True,
        description="dev only: false turns Twilio signature checks off (logged loudly)",
    )
    stream_token_secret: SecretStr = Field(default=SecretStr(""))
    stream_token_ttl_s: int = Field(default=120, ge=10, le=3600)
    admin_token: SecretStr = Field(default=SecretStr(""))

    # --- providers -----------------------------------------------------------------------
    deepgram_api_key: SecretStr = Field(default=SecretStr(""), validation_alias="DEEPGRAM_API_KEY")
    deepgram_url: str | None = Field(default=None, validation_alias="DEEPGRAM_URL")
    deepgram_model: str = "nova-3"
    elevenlabs_api_key: SecretStr = Field(default=SecretStr(""), validation_alias="ELEVENLABS_API_KEY")
    elevenlabs_url: str | None = Field(default=None, validation_alias="ELEVENLABS_URL")
    elevenlabs_voice: str = "21m00Tcm4TlvDq8ikWAM"
    elevenlabs_model: str = "eleven_flash_v2_5"
    openai_api_key: SecretStr = Field(default=SecretStr(""), validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
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
    flows: dict[str, FlowSettings] = Field(default_factory=default_flows)
    barge_in_min_ms: int = Field(default=200, ge=0, le=2000)
    barge_in_min_words: int = Field(default=0, ge=0, le=10)
    playback_lead_ms: int = Field(
        default=200, ge=20, le=200, description="audio sent ahead of real time; 200: 100 ms messages, 120: 20 ms"
    )
    max_reconnects: int = Field(default=3, ge=0, le=20)
    callback_window_hours: float = Field(default=72, ge=0)
    checkpoint_retention_days: float = Field(default=30, gt=0)
    durability: Literal["async", "sync", "exit"] = "async"
    outbound: OutboundSettings = Field(default_factory=OutboundSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    redaction: RedactionSettings = Field(
        default_factory=RedactionSettings, description="PII categories redacted before storage (all on)"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Constructor arguments, then the environment, then the TOML file they name."""
        given, environ = init_settings(), env_settings()
        path = next((d[k] for d in (given, environ) for k in (CONFIG_ENV, "config_file") if d.get(k)), None)
        if path is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, config_file_source(settings_cls, Path(path)))

    @field_validator("public_url")
    @classmethod
    def _http_base(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return v.rstrip("/")

    @field_validator(*DEV_SECRETS)
    @classmethod
    def _dev_secret(cls, v: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("env") == "dev" and not v.get_secret_value():
            return SecretStr(DEV_SECRETS[str(info.field_name)])
        return v

    @field_validator("flows")
    @classmethod
    def _flow_defaults(cls, v: dict[str, FlowSettings], info: ValidationInfo) -> dict[str, FlowSettings]:
        """A flow's graph defaults to its key; a relative knowledge file is relative to the
        config file's folder."""
        config_file: Path | None = info.data.get("config_file")
        flows = {}
        for name, flow in v.items():
            update: dict[str, Any] = {}
            if not flow.graph:
                update["graph"] = name
            if config_file is not None and flow.knowledge_file is not None and not flow.knowledge_file.is_absolute():
                update["knowledge_file"] = config_file.parent / flow.knowledge_file
            flows[name] = flow.model_copy(update=update) if update else flow
        return flows

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        for number, flow_name in self.numbers.items():
            if flow_name not in self.flows:
                raise ValueError(f"numbers[{number!r}] names unknown flow {flow_name!r}")
        if self.default_flow not in self.flows:
            raise ValueError(f"default_flow {self.default_flow!r} is not in flows")
        if self.env == "production":
            self._refuse_placeholders()
        return self

    def _refuse_placeholders(self) -> None:
        bad = [
            name
            for name in DEV_SECRETS
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

    def public(self) -> dict[str, Any]:
        """The effective configuration with secrets masked (for `dialgraph config check`)."""
        data = self.model_dump(mode="json")
        for name in secret_fields(type(self)):
            value = getattr(self, name).get_secret_value()
            data[name] = f"****{value[-2:]}" if len(value) >= 12 else ("****" if value else "")
        data["effective_database_url"] = mask_url(self.effective_database_url)
        if data.get("database_url"):
            data["database_url"] = mask_url(data["database_url"])
        data["providers"] = {"asr": self.asr_provider, "tts": self.tts_provider, "model": self.model_spec}
        return data


def secret_fields(settings_cls: type[BaseSettings]) -> list[str]:
    """The names of the ``SecretStr`` fields: masked in output, refused in the TOML file."""
    return [name for name, field in settings_cls.model_fields.items() if field.annotation is SecretStr]


def config_file_source(settings_cls: type[BaseSettings], path: Path) -> TomlConfigSettingsSource:
    """pydantic-settings' TOML source over ``path``, which must exist and hold no secret
    (by field name or variable name)."""
    if not path.is_file():
        raise ValueError(f"config file {path} does not exist")
    try:
        source = TomlConfigSettingsSource(settings_cls, toml_file=path)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {path}: {exc}") from exc
    secret_names = set()
    for name in secret_fields(settings_cls):
        alias = settings_cls.model_fields[name].validation_alias
        secret_names |= {name, alias.lower()} if isinstance(alias, str) else {name}
    leaked = sorted(key for key in source.toml_data if key.lower() in secret_names)
    if leaked:
        raise ValueError(f"config file {path} holds secrets ({', '.join(leaked)}): set them in the environment")
    return source


def normalise_database_url(url: str) -> str:
    """Map plain URLs to the async drivers we ship: psycopg 3 and aiosqlite."""
    if url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.split(":///", 1)[1]
    return url


def mask_url(url: str) -> str:
    return re.sub(r"//([^:/@]+):([^@]+)@", r"//\1:****@", url)
