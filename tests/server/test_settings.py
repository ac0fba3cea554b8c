"""Settings: env + TOML precedence, masking, refusal of placeholder secrets in production."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from dialgraph.server.cli import main as cli_main
from dialgraph.server.core.flow_config import FlowSettings
from dialgraph.server.core.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "dialgraph.toml.example"

STRONG = {
    "TWILIO_AUTH_TOKEN": "a" * 32,
    "DIALGRAPH_STREAM_TOKEN_SECRET": "b" * 32,
    "DIALGRAPH_ADMIN_TOKEN": "c" * 32,
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("DIALGRAPH_", "TWILIO_", "DEEPGRAM_", "ELEVENLABS_", "OPENAI_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "dialgraph.toml"
    path.write_text(text)
    return path


def test_example_file_is_valid_configuration() -> None:
    s = Settings(config_file=EXAMPLE)
    assert s.flow_for_number("+15550003000") == "sales"
    assert s.flow_for_number("+19999999999") == "scheduling"
    assert s.flows["scheduling"].transfer_targets["front_desk"].number == "+15550100001"
    assert s.flows["scheduling"].hours_on(__import__("datetime").date(2026, 11, 28)) is None  # a Saturday


def test_environment_overrides_toml_which_overrides_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_toml(
        tmp_path, 'public_url = "https://from-file.example.com"\nbarge_in_min_ms = 350\nmodel = "openai:gpt-4o-mini"\n'
    )
    monkeypatch.setenv("DIALGRAPH_CONFIG", str(cfg))
    monkeypatch.setenv("DIALGRAPH_MODEL", "offline")
    s = Settings()
    assert s.public_url == "https://from-file.example.com"  # file beats default
    assert s.barge_in_min_ms == 350
    assert s.model == "offline"  # environment beats file
    monkeypatch.setenv("DIALGRAPH_PUBLIC_URL", "https://from-env.example.com/")
    assert Settings().public_url == "https://from-env.example.com"
    # Constructor arguments beat both.
    assert Settings(public_url="http://arg.example.com").public_url == "http://arg.example.com"


def test_secrets_in_the_file_are_refused(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path, 'twilio_auth_token = "oops"\n')
    with pytest.raises(ValueError, match="secrets"):
        Settings(config_file=cfg)


def test_production_refuses_placeholder_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIALGRAPH_ENV", "production")
    monkeypatch.setenv("DIALGRAPH_PUBLIC_URL", "https://voice.example.com")
    with pytest.raises(ValidationError, match="placeholder"):
        Settings()
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "changeme")
    with pytest.raises(ValidationError, match="twilio_auth_token"):
        Settings()
    for k, v in STRONG.items():
        monkeypatch.setenv(k, v)
    s = Settings()
    assert s.env == "production"
    monkeypatch.setenv("DIALGRAPH_VALIDATE_SIGNATURES", "false")
    with pytest.raises(ValidationError, match="validate_signatures"):
        Settings()


def test_production_needs_https(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in STRONG.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError, match="https"):
        Settings(env="production", public_url="http://voice.example.com")


def test_dev_mode_runs_with_clear_defaults(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    assert s.env == "dev"
    assert s.asr_provider == "offline" and s.tts_provider == "offline" and s.model_spec == "offline"
    assert s.effective_database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'dialgraph.db'}"
    assert s.twilio_auth_token.get_secret_value()  # a dev token exists so signatures still run


def test_providers_follow_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPGRAM_API_KEY", "dg-key-1234567890")
    monkeypatch.setenv("ELEVENLABS_API_KEY", "el-key-1234567890")
    s = Settings()
    assert (s.asr_provider, s.tts_provider) == ("deepgram", "elevenlabs")
    assert Settings(asr="offline").asr_provider == "offline"


def test_stream_url_follows_public_scheme() -> None:
    assert Settings(public_url="https://a.example.com").stream_url == "wss://a.example.com/twilio/media"
    assert Settings(public_url="http://127.0.0.1:8000").stream_url == "ws://127.0.0.1:8000/twilio/media"


def test_database_urls_are_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@db:5432/x")
    assert Settings().effective_database_url == "postgresql+psycopg://u:pw@db:5432/x"


def test_invalid_flow_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="unknown flow"):
        Settings(numbers={"+15550000000": "nope"})
    cfg = write_toml(tmp_path, '[flows.x]\ntimezone = "Mars/Olympus"\n')
    with pytest.raises(ValidationError, match="time zone"):
        Settings(config_file=cfg)
    cfg = write_toml(tmp_path, '[flows.x.business_hours]\nmon = "17:00-09:00"\n')
    with pytest.raises(ValidationError, match="ends before"):
        Settings(config_file=cfg)


def test_config_check_masks_secrets(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "supersecretvalue-0042")
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:dbpassword@db:5432/x")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-verysecretkey-99")
    assert cli_main(["config", "check"]) == 0
    out = capsys.readouterr().out
    assert "supersecretvalue" not in out and "dbpassword" not in out and "verysecretkey" not in out
    data = json.loads(out[: out.rindex("}") + 1])
    assert data["twilio_auth_token"] == "****42"
    assert data["providers"] == {"asr": "offline", "tts": "offline", "model": "offline"}
    assert "active providers: asr=offline tts=offline model=offline" in out


def test_dev_mode_refuses_to_serve_beyond_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    # Dev secrets are public: binding them to a network interface must be refused.
    assert cli_main(["serve", "--host", "0.0.0.0", "--port", "1"]) == 2
    assert "refusing to serve dev mode" in capsys.readouterr().err


def test_vendor_variable_names_and_prefixed_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "5" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-token-from-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("DIALGRAPH_BARGE_IN_MIN_MS", "450")
    monkeypatch.setenv("DIALGRAPH_NUMBERS", '{"+15550004000": "sales"}')
    monkeypatch.setenv("DIALGRAPH_ELEVENLABS_URL", "http://127.0.0.1:9/by-field-name")
    monkeypatch.setenv("DEEPGRAM_URL", "ws://127.0.0.1:9/documented")
    monkeypatch.setenv("DIALGRAPH_DEEPGRAM_URL", "ws://127.0.0.1:9/by-field-name")  # the documented name wins
    s = Settings()
    assert s.twilio_account_sid == "AC" + "5" * 32
    assert s.twilio_auth_token.get_secret_value() == "twilio-token-from-env"
    assert s.model_spec == "openai-compatible:http://127.0.0.1:9/v1/default"
    assert s.barge_in_min_ms == 450
    assert s.flow_for_number("+15550004000") == "sales"
    assert s.elevenlabs_url == "http://127.0.0.1:9/by-field-name"
    assert s.deepgram_url == "ws://127.0.0.1:9/documented"


@pytest.mark.parametrize("variable", ["DIALGRAPH_CONFIG", "DIALGRAPH_CONFIG_FILE"])
def test_the_config_file_named_in_the_environment_is_read(
    variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, str(write_toml(tmp_path, "max_reconnects = 7\n")))
    assert Settings().max_reconnects == 7
    monkeypatch.setenv(variable, str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="does not exist"):
        Settings()


def test_a_secret_in_the_file_is_refused_under_its_variable_name(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path, 'OPENAI_API_KEY = "sk-oops"\n')
    with pytest.raises(ValueError, match=r"secrets \(OPENAI_API_KEY\)"):
        Settings(config_file=cfg)


def test_a_missing_or_broken_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Settings(config_file=tmp_path / "nope.toml")
    with pytest.raises(ValueError, match=r"config file .*dialgraph\.toml"):
        Settings(config_file=write_toml(tmp_path, "numbers = [\n"))


def test_a_relative_knowledge_file_is_relative_to_the_config_file(tmp_path: Path) -> None:
    cfg = write_toml(
        tmp_path, '[flows.scheduling]\nknowledge_file = "faq.yaml"\n[flows.abs]\nknowledge_file = "/srv/faq.yaml"\n'
    )
    s = Settings(config_file=cfg)
    assert s.flows["scheduling"].knowledge_file == tmp_path / "faq.yaml"
    assert s.flows["abs"].knowledge_file == Path("/srv/faq.yaml")


def test_flow_defaults_are_new_values_not_edits_of_the_given_ones() -> None:
    given = FlowSettings()
    s = Settings(flows={"pizza": given, "named": FlowSettings(graph="support")}, default_flow="pizza")
    assert s.flows["pizza"].graph == "pizza" and s.flows["named"].graph == "support"
    assert given.graph == ""  # the caller's object is left alone


def test_a_dtmf_key_must_name_a_transfer_target(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path, '[flows.scheduling]\ndtmf_transfer = { "0" = "nobody" }\n')
    with pytest.raises(ValidationError, match="names unknown target 'nobody'"):
        Settings(config_file=cfg)
