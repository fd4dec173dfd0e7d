"""Tokens with roles, read from the environment and a file; payload paths hidden from viewers."""

from pathlib import Path

import pytest

from eventproc.admin.redaction import REDACTED, RedactionError, parse_paths, redact
from eventproc.admin.roles import ANONYMOUS, Role, TokenBook, TokenError
from eventproc.config import Settings
from eventproc.errors import ConfigError


def test_roles_rank_viewer_below_operator_below_admin() -> None:
    assert Role.ADMIN.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.OPERATOR) and not Role.OPERATOR.allows(Role.ADMIN)


def test_tokens_from_every_source_with_names(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text("# team tokens\noperator alice tok-alice\n\nviewer grafana tok-graf # ro\n")
    book = TokenBook.from_settings(
        "tok-admin", "viewer:tok-v1,viewer:tok-v2,operator:bob:tok-bob", file
    )
    assert book.configured
    assert book.find("tok-admin") is not None and book.find("tok-admin").role is Role.ADMIN  # type: ignore[union-attr]
    assert book.find("tok-alice").actor == "alice"  # type: ignore[union-attr]
    assert book.find("tok-bob").role is Role.OPERATOR  # type: ignore[union-attr]
    first, second = book.find("tok-v1"), book.find("tok-v2")
    assert first is not None and second is not None and first.actor != second.actor
    assert first.actor.startswith("viewer#") and len(first.actor) == len("viewer#") + 8
    assert book.find("tok-v") is None and book.find("") is None


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ("reader:abc", "unknown role 'reader'"),
        ("viewer", "is not role:token"),
        ("viewer:", "is not role:token"),
        ("viewer:a:b:c", "is not role:token"),
        ("viewer:same,admin:same", "listed twice"),
    ],
)
def test_bad_token_lists_are_refused_without_echoing_secrets(tokens: str, message: str) -> None:
    with pytest.raises(TokenError, match=message) as refused:
        TokenBook.from_settings(None, tokens, None)
    assert "same" not in str(refused.value) and "abc" not in str(refused.value)


def test_a_bad_token_file_names_its_line(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text("operator alice\n")
    with pytest.raises(ConfigError, match=r"line 1: expected 'role name token'"):
        Settings(api_tokens_file=file).token_book()
    with pytest.raises(ConfigError, match="API_TOKENS_FILE="):
        Settings(api_tokens_file=tmp_path / "missing").token_book()


def test_no_token_configured_means_open_as_before() -> None:
    book = Settings().token_book()
    assert not book.configured and ANONYMOUS.role is Role.ADMIN
    assert Settings(api_tokens="viewer:x").has_tokens


def test_redaction_hides_paths_wildcards_and_leaves_the_rest() -> None:
    paths = parse_paths("payload.card.number,payload.items.*.email,metadata.ip")
    payload = {"card": {"number": "4111", "exp": "12/30"}, "items": [{"email": "a@b"}, {"n": 1}]}
    hidden = redact("payload", payload, paths)
    assert hidden == {
        "card": {"number": REDACTED, "exp": "12/30"},
        "items": [{"email": REDACTED}, {"n": 1}],
    }
    assert payload["card"]["number"] == "4111"  # a copy: the original is untouched
    assert redact("metadata", {"ip": "1.2.3.4", "trace": "t"}, paths) == {
        "ip": REDACTED,
        "trace": "t",
    }
    assert redact("payload", ["not", "an", "object"], parse_paths("payload.x")) == [
        "not",
        "an",
        "object",
    ]


@pytest.mark.parametrize("text", ["body.x", "payload", "payload..x", "x.y"])
def test_bad_redaction_paths_are_refused(text: str) -> None:
    with pytest.raises(RedactionError, match="REDACT_PATHS"):
        parse_paths(text)
    with pytest.raises(ConfigError, match="REDACT_PATHS"):
        Settings(redact_paths=text).redaction()
