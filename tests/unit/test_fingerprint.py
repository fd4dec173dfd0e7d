"""Error fingerprints group failures that differ only in ids, numbers and values."""

import pytest

from eventproc.fingerprint import MAX_LENGTH, fingerprint


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "LookupError: User 22222222-2222-2222-2222-222222220009 not found",
            "LookupError: User <uuid> not found",
        ),
        (
            "ValueError: amount 12.5 over limit 10 for 'bob'",
            "ValueError: amount <n> over limit <n> for '<str>'",
        ),
        ('KeyError: "name"', 'KeyError: "<str>"'),
        ("ConnectionError: 10.0.0.5:5432 refused", "ConnectionError: <ip> refused"),
        ("mail to a.b@example.com bounced", "mail to <email> bounced"),
        ("late since 2026-12-01T10:00:00Z", "late since <time>"),
        ("token deadbeefdeadbeef00 rejected", "token <hex> rejected"),
        ("handler timed out after 60s", "handler timed out after 60s"),
        ("two   spaces\nand a line", "two spaces and a line"),
    ],
)
def test_fingerprint_normalises_values(message: str, expected: str) -> None:
    assert fingerprint(message) == expected


def test_equal_failures_share_a_print_and_different_ones_do_not() -> None:
    a = fingerprint("LookupError: User 11111111-1111-1111-1111-111111111111 not found")
    b = fingerprint("LookupError: User 33333333-3333-3333-3333-333333333333 not found")
    c = fingerprint("PermissionError: User 11111111-1111-1111-1111-111111111111 not found")
    assert a == b != c


def test_fingerprint_is_bounded() -> None:
    assert len(fingerprint("x" * 10_000)) == MAX_LENGTH
