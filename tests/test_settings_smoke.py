from server.settings import Settings


def test_defaults_build(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.asr_provider == "offline"
    assert s.effective_database_url.startswith("sqlite+aiosqlite:///")
