import pytest

from eventproc.config import Ordering, load_settings
from eventproc.errors import ConfigError


def test_seed_defaults() -> None:
    settings = load_settings()
    assert settings.port == 8080 and settings.poll_interval_ms == 10_000
    assert settings.batch_size == 20 and settings.max_retries == 5
    assert settings.claims_at_once == 2
    # Asynchronous commits only where no order between events is promised.
    assert settings.async_commit is None and settings.effective_async_commit is False
    assert load_settings(ordering="none").effective_async_commit is True
    assert load_settings(ordering="aggregate", async_commit=True).effective_async_commit
    assert settings.enable_polling is True and settings.log_level == "info"
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_database_url.endswith("/eventproc.db")


def test_reads_environment_and_node_env_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_ENV", "production")
    monkeypatch.setenv("BATCH_SIZE", "100")
    monkeypatch.setenv("ENABLE_POLLING", "false")
    monkeypatch.setenv("ORDERING", "none")
    monkeypatch.setenv("CLAIMS_AT_ONCE", "3")
    monkeypatch.setenv("ASYNC_COMMIT", "false")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h:5432/db")
    settings = load_settings()
    assert settings.async_commit is False and settings.effective_async_commit is False
    assert settings.is_production and settings.batch_size == 100
    assert settings.enable_polling is False and settings.ordering is Ordering.NONE
    config = settings.processor_config()
    assert config.batch_size == 100 and config.ordered is False
    assert config.claims_at_once == 3
    assert config.polling_enabled is False and config.retry.max_retries == 5


def test_reads_dotenv_file(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    Path(".env").write_text("MAX_RETRIES=9\nPORT=9000\n")
    settings = load_settings()
    assert settings.max_retries == 9 and settings.port == 9000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "70000"),
        ("BATCH_SIZE", "0"),
        ("MAX_RETRIES", "many"),
        ("ORDERING", "random"),
        ("LOG_LEVEL", "loud"),
        ("DATABASE_URL", "mysql://x"),
        ("HANDLERS", "not a module"),
        ("LEASE_SECONDS", "0"),
        ("CLAIMS_AT_ONCE", "0"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_supabase_url_without_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://abc.supabase.co")
    with pytest.raises(ConfigError, match="session mode"):
        load_settings()


def test_non_loopback_bind_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="API_TOKEN"):
        load_settings(host="0.0.0.0").check_bind()
    load_settings(host="0.0.0.0", api_token="t").check_bind()
    load_settings(host="0.0.0.0", allow_unauthenticated=True).check_bind()
    load_settings(host="::1").check_bind()
