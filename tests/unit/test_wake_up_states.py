"""WakeUps: one warning's worth of transitions, and ``since`` moving only with the mode."""

from eventproc.store.protocol import WakeUps


def test_a_spell_of_missing_notifications_starts_and_ends_once() -> None:
    wake_ups = WakeUps()
    assert wake_ups.mode == "off" and not wake_ups.failing
    wake_ups.verifying()
    assert wake_ups.mode == "polling" and not wake_ups.failing  # not a fault yet
    assert wake_ups.verified() is False  # the first proof ends nothing
    assert wake_ups.mode == "listen" and wake_ups.verified_at is not None
    assert wake_ups.unverified("did not arrive") is True
    since = wake_ups.since
    assert wake_ups.unverified("did not arrive") is False  # still the same spell
    wake_ups.lost("connection lost")
    wake_ups.verifying()  # reconnected: the miss stays reported until a probe arrives
    assert wake_ups.failing and wake_ups.missing and wake_ups.reason == "connection lost"
    assert wake_ups.unverified("did not arrive") is False
    assert wake_ups.since == since and wake_ups.mode == "polling"
    assert wake_ups.verified() is True
    assert wake_ups.mode == "listen" and not wake_ups.failing and wake_ups.reason is None


def test_a_fixed_mode_clears_any_fault() -> None:
    wake_ups = WakeUps()
    wake_ups.unverified("did not arrive")
    wake_ups.set("polling", "LISTEN=false")
    assert not wake_ups.failing and not wake_ups.missing and wake_ups.reason == "LISTEN=false"
