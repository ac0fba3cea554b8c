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

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from dialgraph.server.core.analysis_config import AnalysisSettings
from dialgraph.server.core.checkpoint_keys import parse_keys
from dialgraph.server.core.costs import PriceTable
from dialgraph.server.core.flow_config import (
    E164,
    CallingWindow,
    DltFields,
    FlowSettings,
    TurnSettings,
    default_flows,
)
from dialgraph.server.core.limits import Limits
from dialgraph.server.core.overload import OverloadSettings
from dialgraph.server.core.redaction import RedactionSettings
from dialgraph.server.core.retention import RetentionSettings
from dialgraph.server.core.tracing import TracingSettings
from dialgraph.server.core.webhooks_config import WebhookEndpoint, WebhooksSettings

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
    dashboard_session_hours: float = Field(
        default=8, gt=0, le=720, description="a console login lasts this long (the cookie is signed, not stored)"
    )
    # GET /metrics: a bearer token of its own for Prometheus (empty: the admin token works);
    # ``metrics_open_on_loopback`` (dev only) serves scrapes from 127.0.0.1/::1 without one.
    metrics_token: SecretStr = Field(default=SecretStr(""))
    metrics_open_on_loopback: bool = Field(default=False, description="dev only: /metrics without a token on loopback")
    # prometheus_client's multiprocess directory: `dialgraph serve --workers N` makes a fresh
    # one and sets PROMETHEUS_MULTIPROC_DIR for its workers (prometheus_client reads that
    # variable too); /metrics then sums every worker's files. Not a TOML key to set by hand.
    metrics_multiproc_dir: Path | None = Field(default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    tracing: TracingSettings = Field(
        default_factory=TracingSettings, description="[tracing]: OpenTelemetry spans over OTLP (off by default)"
    )

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
    gc_threshold: int = Field(
        default=20_000,
        ge=0,
        le=1_000_000,
        description="allocations between the cyclic collector's young collections (Python: 700); 0 keeps Python's",
    )

    # --- calls ---------------------------------------------------------------------------
    numbers: dict[str, str] = Field(default_factory=dict, description="dialled E.164 number -> flow name")
    default_flow: str = "scheduling"
    flows: dict[str, FlowSettings] = Field(default_factory=default_flows)
    barge_in_min_ms: int = Field(default=200, ge=0, le=2000)
    barge_in_min_words: int = Field(default=0, ge=0, le=10)
    # Said while the agent talks, these never interrupt it (telephony/call/turn_policy.py):
    # compared lower-case, punctuation dropped, hyphens ignored; [] turns the rule off.
    backchannel_words: list[str] = Field(
        default_factory=lambda: [
            *("mm-hm", "mm-hmm", "mhm", "mm", "hm", "hmm", "hmm hmm", "uh-huh", "oh"),
            *("yeah", "yep", "yup", "yes", "okay", "ok", "right", "sure", "alright"),
            *("haan", "han", "haanji", "haan ji", "ji", "jee", "achha", "accha", "acha", "achchha"),
            *("theek hai", "thik hai", "हाँ", "हां", "हाँ जी", "जी", "अच्छा", "ठीक है", "हम्म", "हम्म हम्म"),
        ],
        description="words that never interrupt the agent (English and Hindi backchannels); [] = off",
    )
    backchannel_max_ms: int = Field(
        default=800, ge=200, le=5000, description="speech this long with no new words interrupts anyway"
    )
    preemptive_replies: bool = Field(
        default=True,
        description="start the reply when the caller pauses on stable text, send it when the turn is confirmed",
    )
    playback_lead_ms: int = Field(
        default=200, ge=20, le=200, description="audio sent ahead of real time; 200: 100 ms messages, 120: 20 ms"
    )
    max_reconnects: int = Field(default=3, ge=0, le=20)
    callback_window_hours: float = Field(default=72, ge=0)
    checkpoint_retention_days: float = Field(
        default=30, gt=0, description="deprecated: [retention] checkpoints_days wins when set"
    )
    durability: Literal["async", "sync", "exit"] = "async"
    graph_loop: Literal["main", "own"] = Field(
        default="main",
        description=(
            "where graph runs happen: the app's loop, or one of their own stepped from it (graphs.graph_loop): "
            "replies' p99 drops below saturation, underruns rise near it"
        ),
    )
    checkpoint_pool_size: int = Field(
        default=20,
        ge=1,
        le=500,
        description="PostgreSQL: the checkpointer's pool per process (lists, deletes; its round trips have 2 more)",
    )
    outbound: OutboundSettings = Field(default_factory=OutboundSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    overload: OverloadSettings = Field(
        default_factory=OverloadSettings, description="[overload]: when this process refuses new calls (off by default)"
    )
    turn: TurnSettings = Field(
        default_factory=TurnSettings,
        description="[turn]: the end-of-turn detector (Deepgram and whisper); a flow may override it",
    )
    redaction: RedactionSettings = Field(
        default_factory=RedactionSettings, description="PII categories redacted before storage (all on)"
    )
    prices: PriceTable = Field(
        default_factory=PriceTable, description="list prices (USD) for cost per call; see server/core/costs.py"
    )
    analysis: AnalysisSettings = Field(
        default_factory=AnalysisSettings, description="post-call summary and fields (server/analysis.py)"
    )
    retention: RetentionSettings = Field(
        default_factory=RetentionSettings, description="days each kind of personal data is kept (core/retention.py)"
    )
    privacy_hash_key: SecretStr = Field(
        default=SecretStr(""),
        description="key of the hash an erased person's opt-out is kept as; unset: derived from stream_token_secret",
    )
    checkpoint_key: SecretStr = Field(
        default=SecretStr(""),
        description="AES key checkpoints are encrypted with at rest (DIALGRAPH_CHECKPOINT_KEY); unset: not encrypted",
    )
    checkpoint_old_keys: SecretStr = Field(
        default=SecretStr(""),
        description="comma-separated earlier checkpoint keys, still accepted for reading (rotation)",
    )
    # --- end-of-call webhooks (server/webhooks) ---------------------------------------------
    webhooks: WebhooksSettings = Field(
        default_factory=WebhooksSettings, description="[webhooks]: global endpoints and the delivery schedule"
    )
    webhook_secrets: SecretStr = Field(
        default=SecretStr(""),
        description='DIALGRAPH_WEBHOOK_SECRETS: JSON {"endpoint name": "signing secret"} (or secret_env per endpoint)',
    )
    _webhook_keys: dict[str, str] = PrivateAttr(default_factory=dict)

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

    @field_validator("checkpoint_key", "checkpoint_old_keys")
    @classmethod
    def _checkpoint_keys(cls, v: SecretStr) -> SecretStr:
        parse_keys(v.get_secret_value())  # a malformed key stops the start, not the first call
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        for number, flow_name in self.numbers.items():
            if flow_name not in self.flows:
                raise ValueError(f"numbers[{number!r}] names unknown flow {flow_name!r}")
        if self.default_flow not in self.flows:
            raise ValueError(f"default_flow {self.default_flow!r} is not in flows")
        for name in self.flows:
            self.turn_for(name)  # a flow's [turn] must make sense over the global one
        if self.env == "production":
            self._refuse_placeholders()
        self._resolve_webhook_secrets()
        return self

    def turn_for(self, flow: str | None) -> TurnSettings:
        """``[turn]`` with ``[flows.NAME.turn]`` over it (the global one for an unknown flow)."""
        settings = self.flows.get(flow) if flow is not None else None
        return self.turn.merged(settings.turn if settings is not None else None, where=f"flows.{flow}.turn")

    def _resolve_webhook_secrets(self) -> None:
        """Each configured endpoint's signing secret, read once: its ``secret_env`` variable,
        else ``DIALGRAPH_WEBHOOK_SECRETS[name]``. An endpoint without one stops the start."""
        endpoints = self.webhook_endpoints()
        if not endpoints:
            return
        raw = self.webhook_secrets.get_secret_value()
        try:
            given = json.loads(raw) if raw else {}
        except ValueError:
            raise ValueError("webhook_secrets (DIALGRAPH_WEBHOOK_SECRETS) is not a JSON object") from None
        if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
            raise ValueError('webhook_secrets (DIALGRAPH_WEBHOOK_SECRETS) must be {"endpoint": "secret", ...}')
        keys: dict[str, str] = {}
        for name, endpoint in endpoints.items():
            secret = os.environ.get(endpoint.secret_env, "") if endpoint.secret_env else ""
            secret = secret or given.get(name, "")
            if not secret:
                where = f"${endpoint.secret_env} or " if endpoint.secret_env else ""
                raise ValueError(
                    f"webhook endpoint {name!r} has no signing secret: set {where}DIALGRAPH_WEBHOOK_SECRETS"
                )
            if self.env == "production" and (len(secret) < 16 or _PLACEHOLDERS.match(secret)):
                raise ValueError(f"production mode refuses a short or placeholder secret for webhook endpoint {name!r}")
            keys[name] = secret
        self._webhook_keys = keys

    def webhook_endpoints(self, flow: str | None = None) -> dict[str, WebhookEndpoint]:
        """Endpoints by name: all of them (``flow`` None), or those a flow's events go to."""
        out: dict[str, WebhookEndpoint] = {}
        chosen = self.flows if flow is None else {flow: self.flows[flow]} if flow in self.flows else {}
        flows = list(chosen.items())
        own = flows[0][1].webhooks if flow is not None and flows else None
        use_global = own is None or own.global_endpoints
        if use_global:
            out.update(self.webhooks.endpoints)
        for flow_name, settings in flows:
            for name, endpoint in (settings.webhooks.endpoints if settings.webhooks else {}).items():
                if name in out and out[name] != endpoint:
                    raise ValueError(
                        f"webhook endpoint name {name!r} is used twice (flow {flow_name!r}) with two definitions"
                    )
                out[name] = endpoint
        return out

    def webhook_secret(self, endpoint: str) -> str:
        """The signing secret of a configured endpoint ("" for an unknown name)."""
        return self._webhook_keys.get(endpoint, "")

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
    def checkpoint_keys(self) -> list[bytes]:
        """The checkpoint keys, newest (the one new checkpoints are written with) first."""
        return parse_keys(self.checkpoint_key.get_secret_value()) + parse_keys(
            self.checkpoint_old_keys.get_secret_value()
        )

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
