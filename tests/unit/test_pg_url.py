"""DATABASE_URL parsing: every libpq parameter eventproc honours, and what it refuses."""

import inspect
import socket
import ssl

import asyncpg
import pytest

from eventproc.store.postgres.url import ConnectionKind, PgUrl, Pooler, UrlError, server_options

KINDS = list(ConnectionKind)
ASYNCPG_KEYWORDS = set(inspect.signature(asyncpg.connect).parameters)
# What SQLAlchemy's asyncpg dialect takes out of connect_args before calling asyncpg.connect.
SQLALCHEMY_KEYWORDS = {"prepared_statement_cache_size", "prepared_statement_name_func"}


def parse(query: str, base: str = "postgresql://u:pw@db.example:5433/app") -> PgUrl:
    return PgUrl.parse(f"{base}?{query}" if query else base)


def test_plain_url_parts() -> None:
    url = parse("")
    args = url.driver_args(ConnectionKind.HOT)
    assert (args["host"], args["port"], args["user"], args["password"], args["database"]) == (
        ["db.example"],
        5433,
        "u",
        "pw",
        "app",
    )
    assert "dsn" not in args and "ssl" not in args  # libpq's defaults (PGSSLMODE, prefer)
    assert url.display == "postgresql://u@db.example:5433/app"  # no password
    assert "pw" not in repr(url)


def test_percent_encoding_multi_host_ipv6_and_sockets() -> None:
    url = PgUrl.parse("postgres://us%40er:p%2Fw@h1:5432,[::1]:5433/my%20db")
    assert (url.user, url.password, url.database) == ("us@er", "p/w", "my db")
    assert url.hosts == ("h1", "::1") and url.ports == (5432, 5433)
    assert url.driver_args(ConnectionKind.POOL)["port"] == [5432, 5433]
    socket_dir = PgUrl.parse("postgresql:///app?host=/var/run/postgresql&port=5434")
    assert socket_dir.hosts == ("/var/run/postgresql",) and socket_dir.ports == (5434,)
    encoded = PgUrl.parse("postgresql://%2Fvar%2Frun%2Fpostgresql/app")
    assert encoded.hosts == ("/var/run/postgresql",)
    # Query parameters override the authority part, as in libpq.
    assert parse("dbname=other&user=v").driver_args(ConnectionKind.HOT)["database"] == "other"
    # A '+' stays a '+' (libpq decodes %XX only).
    assert parse("password=a+b").password == "a+b"


@pytest.mark.parametrize(
    ("value", "timeout"), [("10", 10.0), ("1", 2.0), ("0", None), ("-5", None)]
)
def test_connect_timeout_is_libpqs(value: str, timeout: float | None) -> None:
    # libpq: at least 2 s; zero or negative waits indefinitely.
    for kind in KINDS:
        assert parse(f"connect_timeout={value}").driver_args(kind)["timeout"] == timeout


def test_connect_timeout_defaults_to_ten_seconds_everywhere() -> None:
    for kind in KINDS:
        assert parse("").driver_args(kind)["timeout"] == 10.0


def test_application_name_options_and_own_settings_are_merged() -> None:
    url = parse(
        "application_name=billing&options=-c%20statement_timeout%3D5s%20--lock-timeout%3D2s"
    )
    own = {"plan_cache_mode": "force_custom_plan", "statement_timeout": "1s"}
    settings = url.driver_args(ConnectionKind.HOT, own)["server_settings"]
    # The user's options win over eventproc's own defaults.
    assert settings == {
        "plan_cache_mode": "force_custom_plan",
        "statement_timeout": "5s",
        "lock_timeout": "2s",
        "application_name": "billing",
    }
    listen = url.driver_args(ConnectionKind.LISTEN)["server_settings"]
    assert listen == {
        "statement_timeout": "5s",
        "lock_timeout": "2s",
        "application_name": "billing",
    }


def test_application_name_fallbacks() -> None:
    assert parse("").settings()["application_name"] == "eventproc"
    assert parse("fallback_application_name=x").settings()["application_name"] == "x"
    via_options = parse("options=-c%20application_name%3Dy&fallback_application_name=x")
    assert via_options.settings()["application_name"] == "y"
    both = parse("options=-capplication_name%3Dy&application_name=z")
    assert both.settings()["application_name"] == "z"


def test_server_options_syntax() -> None:
    assert server_options(r"-c search_path=a\,\ b -cwork_mem=4MB --geqo=off") == {
        "search_path": "a, b",
        "work_mem": "4MB",
        "geqo": "off",
    }
    with pytest.raises(UrlError, match="'-B'"):
        server_options("-B 100")
    with pytest.raises(UrlError, match="name=value"):
        server_options("-c statement_timeout")


def test_ssl_parameters_reach_asyncpg_through_a_dsn_of_their_own() -> None:
    url = parse("sslmode=verify-full&sslrootcert=/etc/ca.pem&sslcert=/c.pem&sslkey=/k.pem")
    for kind in KINDS:
        args = url.driver_args(kind)
        assert args["dsn"] == (
            "postgresql://?sslcert=%2Fc.pem&sslkey=%2Fk.pem&sslmode=verify-full"
            "&sslrootcert=%2Fetc%2Fca.pem"
        )
        assert args["host"] == ["db.example"]  # keywords win over the dsn in asyncpg
    assert parse("ssl=require").ssl == (("sslmode", "require"),)  # asyncpg's spelling
    assert parse("requiressl=1").ssl == (("sslmode", "require"),)  # libpq's old one


def test_sslrootcert_system_uses_the_system_trust_store() -> None:
    context = parse("sslrootcert=system").driver_args(ConnectionKind.HOT)["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    with pytest.raises(UrlError, match="verify-full"):
        parse("sslrootcert=system&sslmode=require")


def test_target_session_attrs_and_kerberos() -> None:
    args = parse("target_session_attrs=read-write&krbsrvname=pg&gsslib=gssapi").driver_args(
        ConnectionKind.POOL
    )
    assert args["target_session_attrs"] == "read-write"
    assert (args["krbsrvname"], args["gsslib"]) == ("pg", "gssapi")


def test_keepalives_become_socket_options() -> None:
    url = parse(
        "keepalives=1&keepalives_idle=30&keepalives_interval=5&keepalives_count=3"
        "&tcp_user_timeout=9000"
    )
    assert url.keepalives.idle == 30 and url.keepalives.user_timeout_ms == 9000
    for kind in KINDS:
        cls = url.driver_args(kind)["connection_class"]
        assert issubclass(cls, asyncpg.Connection)
    assert parse("keepalives=0").keepalives.enabled is False
    assert parse("").keepalives.enabled is True  # libpq's default
    # One class per setting, not per connection.
    assert (
        url.driver_args(ConnectionKind.HOT)["connection_class"]
        is (
            parse(
                "keepalives_idle=30&keepalives_interval=5&keepalives_count=3&tcp_user_timeout=9000"
            ).driver_args(ConnectionKind.POOL)["connection_class"]
        )
    )
    assert socket.SO_KEEPALIVE  # the option the class sets


def test_pgbouncer_and_statement_caches_are_typed_and_kept_to_their_connections() -> None:
    pooled = parse("pgbouncer=true")
    assert pooled.pooler is Pooler.TRANSACTION
    assert pooled.statement_cache_size == 0 and pooled.prepared_statement_cache_size == 0
    assert parse("pgbouncer=false").pooler is Pooler.NONE
    assert parse("").pooler is None and parse("").mode is Pooler.NONE
    explicit = parse("pgbouncer=true&statement_cache_size=50")
    assert explicit.statement_cache_size == 50

    sqlalchemy_only = parse("prepared_statement_cache_size=0")
    assert sqlalchemy_only.engine_args()["prepared_statement_cache_size"] == 0
    assert sqlalchemy_only.driver_args(ConnectionKind.HOT)["statement_cache_size"] == 0
    listen = sqlalchemy_only.driver_args(ConnectionKind.LISTEN)
    assert "statement_cache_size" not in listen
    assert "prepared_statement_cache_size" not in listen["server_settings"]

    asyncpg_cache = parse("statement_cache_size=7")
    assert all(asyncpg_cache.driver_args(kind)["statement_cache_size"] == 7 for kind in KINDS)
    assert "prepared_statement_cache_size" not in asyncpg_cache.engine_args()


OWN = {"plan_cache_mode": "force_custom_plan", "synchronous_commit": "off"}


def test_direct_connections_send_every_setting_at_start_up() -> None:
    url = parse("options=-c%20statement_timeout%3D5s")
    assert url.driver_args(ConnectionKind.HOT, OWN)["server_settings"] == {
        **OWN,
        "statement_timeout": "5s",
        "application_name": "eventproc",
    }
    assert url.session_settings(OWN) == {}
    assert "statement_cache_size" not in url.driver_args(ConnectionKind.HOT, OWN)


def test_a_session_pooler_gets_its_settings_by_set_after_connecting() -> None:
    """PgBouncer refuses plan_cache_mode at start-up in session mode too (measured, 1.18)."""
    url = parse("options=-c%20statement_timeout%3D5s&application_name=billing").behind(
        Pooler.SESSION
    )
    assert url.mode is Pooler.SESSION
    for kind in KINDS:
        args = url.driver_args(kind, OWN)
        assert args["server_settings"] == {"application_name": "billing"}
        assert "statement_cache_size" not in args  # named statements work: one session
    assert url.session_settings(OWN) == {**OWN, "statement_timeout": "5s"}
    assert "prepared_statement_cache_size" not in url.engine_args(OWN)


@pytest.mark.parametrize("how", ["pgbouncer=true", "POOLER=transaction"])
def test_a_transaction_pooler_gets_no_session_state_on_any_connection(how: str) -> None:
    query = "application_name=billing&options=-c%20TimeZone%3DUTC&sslmode=require"
    if how == "pgbouncer=true":
        url = parse(f"{query}&pgbouncer=true").behind(Pooler.TRANSACTION)
    else:
        url = parse(query).behind(Pooler.TRANSACTION)
    assert url.mode is Pooler.TRANSACTION
    for kind in KINDS:
        args = url.driver_args(kind, OWN)
        # Only what PgBouncer 1.18 accepts at start-up; eventproc's own are dropped.
        assert args["server_settings"] == {"TimeZone": "UTC", "application_name": "billing"}
        assert args["statement_cache_size"] == 0  # unnamed statements only
        assert args["dsn"] == "postgresql://?sslmode=require"
    assert url.session_settings(OWN) == {}
    engine = url.engine_args(OWN)
    assert engine["prepared_statement_cache_size"] == 0 and engine["statement_cache_size"] == 0
    # Unique statement names fail in autocommit through the pooler (url.py says why).
    assert "prepared_statement_name_func" not in engine


def test_explicit_caches_win_behind_a_transaction_pooler() -> None:
    url = parse("statement_cache_size=100&prepared_statement_cache_size=5")
    pooled = url.behind(Pooler.TRANSACTION)
    assert pooled.driver_args(ConnectionKind.HOT)["statement_cache_size"] == 100
    assert pooled.engine_args()["prepared_statement_cache_size"] == 5
    assert type(pooled.engine_args()["prepared_statement_cache_size"]) is int


@pytest.mark.parametrize(
    ("query", "pooler", "message"),
    [
        ("pgbouncer=true", Pooler.SESSION, "pgbouncer=true contradicts POOLER=session"),
        ("pgbouncer=true", Pooler.NONE, "pgbouncer=true contradicts POOLER=none"),
        ("pgbouncer=false", Pooler.TRANSACTION, "pgbouncer=false contradicts POOLER=transaction"),
        ("options=-c%20search_path%3Dx", Pooler.TRANSACTION, "options: search_path cannot be set"),
    ],
)
def test_pooler_contradictions_are_one_line(query: str, pooler: Pooler, message: str) -> None:
    with pytest.raises(UrlError) as caught:
        parse(query).behind(pooler)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_pooler_agreements() -> None:
    assert parse("pgbouncer=false").behind(Pooler.SESSION).mode is Pooler.SESSION
    assert parse("pgbouncer=true").behind(Pooler.TRANSACTION).mode is Pooler.TRANSACTION
    assert parse("pgbouncer=true").behind(None).mode is Pooler.TRANSACTION
    with pytest.raises(UrlError, match="options: statement_timeout cannot be set"):
        parse("pgbouncer=true&options=-c%20statement_timeout%3D5s")


@pytest.mark.parametrize(
    "query",
    [
        "",
        "connect_timeout=10&application_name=a&options=-c%20x%3D1&keepalives=1",
        "pgbouncer=true&statement_cache_size=0&prepared_statement_cache_size=0",
        "sslmode=require&target_session_attrs=primary&passfile=/p&service=s",
        "client_encoding=UTF8&channel_binding=prefer&gssencmode=disable&sslsni=1",
    ],
)
def test_every_argument_is_one_asyncpg_accepts(query: str) -> None:
    """The TypeError of issue 11 (an unexpected keyword argument) cannot come back."""
    url = parse(query)
    for kind in KINDS:
        assert set(url.driver_args(kind)) <= ASYNCPG_KEYWORDS
    assert set(url.engine_args()) <= ASYNCPG_KEYWORDS | SQLALCHEMY_KEYWORDS


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("foo=1", "unsupported parameter 'foo'"),
        ("connection_limit=1", "unsupported parameter 'connection_limit'"),
        ("hostaddr=10.0.0.1", "'hostaddr' is not supported"),
        ("replication=database", "'replication' is not supported"),
        ("statement_cache_size=x", "statement_cache_size='x' must be a whole number"),
        ("statement_cache_size=-1", "statement_cache_size='-1' must be a whole number"),
        ("prepared_statement_cache_size=1.5", "prepared_statement_cache_size='1.5'"),
        ("pgbouncer=maybe", "pgbouncer='maybe' must be true or false"),
        ("connect_timeout=soon", "connect_timeout='soon' must be a whole number"),
        ("keepalives_idle=x", "keepalives_idle='x'"),
        ("sslmode=on", "sslmode='on' must be one of disable, allow"),
        ("target_session_attrs=fast", "target_session_attrs='fast'"),
        ("client_encoding=LATIN1", "client_encoding='LATIN1' is not supported"),
        ("channel_binding=require", "channel_binding='require' is not supported"),
        ("options=-B%20100", "options: '-B' is not supported"),
        ("port=99999", "port '99999'"),
        ("host=a,b&port=1,2,3", "3 ports for 2 hosts"),
        ("novalue", "'novalue' has no '=value'"),
    ],
)
def test_refusals_are_one_line_naming_the_parameter(query: str, message: str) -> None:
    with pytest.raises(UrlError) as caught:
        parse(query)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text and "pw" not in text


def test_other_schemes_are_refused() -> None:
    with pytest.raises(UrlError, match="postgresql://"):
        PgUrl.parse("mysql://u@h/db")
    assert PgUrl.parse("postgresql+asyncpg://h/db").hosts == ("h",)


def test_empty_values_mean_not_set() -> None:
    assert parse("application_name=&connect_timeout=").application_name is None
    assert parse("connect_timeout=").connect_timeout == 10.0
