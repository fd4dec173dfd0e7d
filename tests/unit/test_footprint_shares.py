"""DATABASE_POOL_SIZE shared out: the parts add up to the cap, and too small is refused."""

import pytest

from eventproc.errors import ConfigError
from eventproc.store.postgres.footprint import Footprint


def test_the_default_share() -> None:
    assert Footprint.of(20, listen=True) == Footprint(pooled=15, hot=4, listener=1)
    assert Footprint.of(10, listen=True) == Footprint(pooled=7, hot=2, listener=1)
    assert Footprint.of(3, listen=False) == Footprint(pooled=2, hot=1, listener=0)


@pytest.mark.parametrize("listen", [True, False])
def test_every_size_adds_up_to_the_cap(listen: bool) -> None:
    for size in range(4, 200):
        footprint = Footprint.of(size, listen=listen)
        assert footprint.total == size
        assert 1 <= footprint.hot <= 4 and footprint.pooled >= 2


def test_a_cap_too_small_is_refused_with_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^DATABASE_POOL_SIZE=3 is too small: .* at least 4"):
        Footprint.of(3, listen=True)
    with pytest.raises(ConfigError, match="at least 3"):
        Footprint.of(2, listen=False)
