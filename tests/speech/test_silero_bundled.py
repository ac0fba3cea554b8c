"""silero's ONNX model ships inside the telephony package: the offline stack runs with
onnxruntime alone, without the silero-vad package (whose wheel pulls torch)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

import dialgraph.telephony.speech
from dialgraph.server.core.settings import Settings
from dialgraph.telephony.speech.workers import ModelIntegrityError
from tests.speech.conftest import needs_offline

needs_onnxruntime = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime")
DATA = Path(dialgraph.telephony.speech.__file__).resolve().parent / "data"


@pytest.fixture
def without_silero_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """As after ``pip install 'dialgraph[offline]'``: no ``silero_vad`` module to import."""
    monkeypatch.setitem(sys.modules, "silero_vad", None)  # type: ignore[arg-type]
    assert importlib.util.find_spec("silero_vad") is None


def test_the_model_and_its_licence_ship_in_the_package() -> None:
    from dialgraph.telephony.speech.vad import SILERO_ONNX_SHA256, silero_model_path

    path = silero_model_path()
    assert path.parent == DATA
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SILERO_ONNX_SHA256
    licence = (DATA / "silero_vad.LICENSE").read_text()
    assert "MIT License" in licence and "Silero Team" in licence


@needs_onnxruntime
def test_vad_factory_picks_silero_without_the_silero_package(tmp_path: Path, without_silero_package: None) -> None:
    from dialgraph.telephony.speech.providers import build_vad_factory

    vad = build_vad_factory(Settings(data_dir=tmp_path, _env_file=None))()  # type: ignore[call-arg]
    assert type(vad).__name__ == "SileroVad"
    assert vad.speech_probability(b"\xff" * 160) < 0.5  # mu-law silence


@needs_offline
async def test_offline_recognizer_builds_without_the_silero_package(
    tmp_path: Path, without_silero_package: None
) -> None:
    from dialgraph.telephony.speech.providers import build_recognizer

    settings = Settings(data_dir=tmp_path, _env_file=None)  # type: ignore[call-arg]
    assert settings.asr_provider == "offline"
    async with contextlib.AsyncExitStack() as stack:
        rec = await build_recognizer(settings, stack)
        assert type(rec).__name__ == "WhisperRecognizer"


@needs_onnxruntime
def test_a_tampered_model_file_is_refused(tmp_path: Path) -> None:
    from dialgraph.telephony.speech.vad import SileroVad, silero_model_path

    copy = tmp_path / "silero_vad.onnx"
    shutil.copyfile(silero_model_path(), copy)
    with copy.open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00" * 16)
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        SileroVad(model_path=copy)
