"""Roles and the tokens that carry them: viewer reads, operator steers, admin does everything.

Tokens come from the environment (``API_TOKENS``, ``API_TOKENS_FILE``, and
``API_TOKEN``, which has always meant full access). With none configured the
service is open, as before: every caller is an admin named ``anonymous``
(and the bind check refuses a non-loopback HOST without a token).
"""

import enum
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: "Role") -> bool:
        return self.rank >= needed.rank


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the name the audit trail records, and what they may do."""

    actor: str
    role: Role


ANONYMOUS = Principal("anonymous", Role.ADMIN)


class TokenError(ValueError):
    """A token list that cannot be read: refused at start-up, naming the entry."""


@dataclass(frozen=True, slots=True)
class _Token:
    secret: bytes
    principal: Principal


class TokenBook:
    """The configured tokens; ``find`` compares against every one in constant time."""

    def __init__(self, entries: list[tuple[Role, str | None, str]]) -> None:
        seen: set[str] = set()
        tokens: list[_Token] = []
        for role, name, secret in entries:
            if secret in seen:
                raise TokenError(f"a token is listed twice (role {role}): give each its own")
            seen.add(secret)
            actor = name or f"{role}#{hashlib.sha256(secret.encode()).hexdigest()[:8]}"
            tokens.append(_Token(secret.encode(), Principal(actor, role)))
        self._tokens = tuple(tokens)

    @property
    def configured(self) -> bool:
        return bool(self._tokens)

    def find(self, given: str) -> Principal | None:
        found: Principal | None = None
        candidate = given.encode()
        for token in self._tokens:  # no early exit: the time does not tell which matched
            if hmac.compare_digest(candidate, token.secret):
                found = token.principal
        return found

    @classmethod
    def from_settings(
        cls, api_token: str | None, api_tokens: str | None, api_tokens_file: Path | None
    ) -> "TokenBook":
        entries: list[tuple[Role, str | None, str]] = []
        if api_token:
            entries.append((Role.ADMIN, "admin", api_token.strip()))
        if api_tokens:
            entries += [
                _entry(item, "API_TOKENS") for item in api_tokens.split(",") if item.strip()
            ]
        if api_tokens_file is not None:
            entries += _file_entries(api_tokens_file)
        return cls(entries)


def _entry(item: str, source: str) -> tuple[Role, str | None, str]:
    """``role:token`` or ``role:name:token``."""
    parts = [part.strip() for part in item.strip().split(":")]
    if len(parts) not in (2, 3) or not all(parts):
        raise TokenError(f"{source}: {_shown(item)} is not role:token or role:name:token")
    return _role(parts[0], source), parts[1] if len(parts) == 3 else None, parts[-1]


def _file_entries(path: Path) -> list[tuple[Role, str | None, str]]:
    """One token per line: ``role name token`` (``#`` starts a comment)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenError(f"API_TOKENS_FILE={path}: {exc.strerror or exc}") from None
    entries: list[tuple[Role, str | None, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"API_TOKENS_FILE={path} line {number}"
        if len(fields) != 3:
            raise TokenError(f"{where}: expected 'role name token'")
        entries.append((_role(fields[0], where), fields[1], fields[2]))
    return entries


def _role(text: str, source: str) -> Role:
    try:
        return Role(text.lower())
    except ValueError:
        raise TokenError(f"{source}: unknown role {text!r} (viewer, operator or admin)") from None


def _shown(item: str) -> str:
    """An entry named in an error without its secret."""
    head = item.strip().split(":", 1)[0]
    return f"the entry starting {head!r}"
