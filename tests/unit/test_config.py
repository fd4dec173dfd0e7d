import pytest

from eventproc.config import Ordering, load_settings
from eventproc.errors import ConfigError
from eventproc.store.postgres.url import Pooler


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


# -- issue 11: values as the replaced service's users write them ------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("LOG_LEVEL", "INFO", "info"),
        ("LOG_LEVEL", "Warning", "warning"),
        ("LOG_FORMAT", "JSON", "json"),
        ("ORDERING", "NONE", "none"),
        ("ORDERING", " Aggregate ", "aggregate"),
        ("AGGREGATE_FAILURE", "PARK", "park"),
        ("AGGREGATE_FAILURE", "Block", "block"),
    ],
)
def test_enum_settings_take_any_case(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    assert getattr(load_settings(), name.lower()) == expected


def test_retry_max_below_base_is_refused_naming_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_BASE_MS", "5000")
    monkeypatch.setenv("RETRY_MAX_MS", "1000")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "RETRY_MAX_MS=1000" in message and "RETRY_BASE_MS=5000" in message
    assert "\n" not in message
    # The default maximum counts too, and says it is the default.
    monkeypatch.delenv("RETRY_MAX_MS")
    with pytest.raises(ConfigError, match=r"RETRY_MAX_MS=300000 \(the default\)"):
        load_settings(retry_base_ms=400_000)
    assert (
        load_settings(retry_base_ms=1000, retry_max_ms=1000).processor_config().retry.max_ms == 1000
    )


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "::1", "0.0.0.0", "::", "localhost", "api.internal.", "db_1"]
)
def test_host_accepts_addresses_and_names(host: str) -> None:
    assert load_settings(host=host, allow_unauthenticated=True).host == host


@pytest.mark.parametrize("host", ["not a host", "", "-bad.example", "a..b", "x" * 64, "http://h"])
def test_host_that_is_not_an_address_says_so(host: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(host=host)
    assert f"HOST={host!r} is not an IP address or host name" in str(caught.value)
    assert "loopback" not in str(caught.value)


def test_port_zero_means_any_free_port() -> None:
    assert load_settings(port=0).port == 0


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("foo=1", "unsupported parameter 'foo'"),
        ("statement_cache_size=abc", "statement_cache_size='abc'"),
        ("pgbouncer=perhaps", "pgbouncer='perhaps'"),
    ],
)
def test_database_url_parameters_are_checked_at_start_up(
    monkeypatch: pytest.MonkeyPatch, query: str, named: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:s3cret@db:5432/app?{query}")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"DATABASE_URL: {named}" in message
    assert "s3cret" not in message and "\n" not in message


def test_libpq_url_parameters_are_accepted() -> None:
    url = (
        "postgresql://u:p@db:5432/app?connect_timeout=10&application_name=x"
        "&options=-c%20statement_timeout%3D5s&keepalives=1&sslmode=require"
        "&target_session_attrs=read-write&statement_cache_size=0"
        "&prepared_statement_cache_size=0"
    )
    assert load_settings(database_url=url).database_url == url
    # Through a transaction pooler, every parameter but a session setting in options.
    pooled = url.replace("options=-c%20statement_timeout%3D5s", "pgbouncer=true")
    assert load_settings(database_url=pooled).database_url == pooled


def test_secrets_are_not_repeated_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(database_url="mysql://u:s3cret@db/app")
    assert "s3cret" not in str(caught.value) and "DATABASE_URL" in str(caught.value)


PG = "postgresql://u@db:5432/app"


def test_pooler_defaults_to_none_and_takes_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings(database_url=PG).pooler is Pooler.NONE
    monkeypatch.setenv("POOLER", "Session")
    monkeypatch.setenv("DATABASE_URL", PG)
    settings = load_settings()
    assert settings.pooler is Pooler.SESSION
    # A session pooler changes nothing the processor sees.
    assert settings.listen is True and settings.poll_interval_ms == 10_000


@pytest.mark.parametrize(
    "overrides",
    [{"pooler": "transaction", "database_url": PG}, {"database_url": f"{PG}?pgbouncer=true"}],
)
def test_a_transaction_pooler_turns_listen_off_and_polls_every_second(
    overrides: dict[str, str],
) -> None:
    settings = load_settings(**overrides, ordering="none")
    assert settings.pooler is Pooler.TRANSACTION
    assert settings.listen is False and settings.poll_interval_ms == 1000
    assert settings.processor_config().listen is False
    assert settings.processor_config().poll_interval_ms == 1000
    # No session setting holds there: every commit waits.
    assert settings.effective_async_commit is False
    assert load_settings(**overrides, async_commit=False).effective_async_commit is False


def test_a_transaction_pooler_keeps_what_the_user_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"{PG}?pgbouncer=true")
    monkeypatch.setenv("LISTEN", "true")
    monkeypatch.setenv("POLL_INTERVAL_MS", "250")
    settings = load_settings()
    assert settings.listen is True and settings.poll_interval_ms == 250


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"pooler": "session", "database_url": f"{PG}?pgbouncer=true"},
            "DATABASE_URL: pgbouncer=true contradicts POOLER=session",
        ),
        (
            {"pooler": "none", "database_url": f"{PG}?pgbouncer=true"},
            "DATABASE_URL: pgbouncer=true contradicts POOLER=none",
        ),
        (
            {"pooler": "transaction", "database_url": f"{PG}?pgbouncer=false"},
            "DATABASE_URL: pgbouncer=false contradicts POOLER=transaction",
        ),
        (
            {"pooler": "transaction", "database_url": f"{PG}?options=-c%20search_path%3Dx"},
            "DATABASE_URL: options: search_path cannot be set through a transaction pooler",
        ),
        ({"pooler": "transaction"}, "POOLER=transaction needs a PostgreSQL DATABASE_URL"),
        (
            {"database_url": f"{PG}?pgbouncer=true", "async_commit": "true"},
            "ASYNC_COMMIT=true cannot work through a transaction pooler",
        ),
        ({"pooler": "sometimes", "database_url": PG}, "POOLER='sometimes'"),
    ],
)
def test_pooler_contradictions_are_one_line(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    assert message in str(caught.value) and "\n" not in str(caught.value)
