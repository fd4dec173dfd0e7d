"""The cache-invalidation extension point that ``user.verified`` calls.

The replaced service dropped its in-memory caches of a user's state when the
user was verified. This pack keeps no such cache, so the hook does nothing by
default; a deployment that caches user state elsewhere (Redis, a CDN, another
service) installs its own with :func:`set_cache_invalidator`::

    async def drop_user_cache(user_id: uuid.UUID, poc_agent_type: str) -> None:
        await redis.delete(f"user:{user_id}")

    yachtparty.cache.set_cache_invalidator(drop_user_cache)

The hook is awaited inside the event's transaction, before it commits: if it
raises, the event is retried like any other failure (and nothing the handler
wrote is kept). It can therefore run more than once for one event (retries,
replays), so it must be idempotent and should be quick.
"""

import uuid
from collections.abc import Awaitable, Callable

CacheInvalidator = Callable[[uuid.UUID, str], Awaitable[None]]
"""``async def hook(user_id, poc_agent_type) -> None``."""


async def no_op(user_id: uuid.UUID, poc_agent_type: str) -> None:
    """The default: there is no cache to invalidate."""


_invalidator: CacheInvalidator = no_op


def set_cache_invalidator(hook: CacheInvalidator | None) -> None:
    """Install ``hook`` (``None`` restores the no-op default)."""
    global _invalidator
    _invalidator = hook if hook is not None else no_op


async def invalidate_user_caches(user_id: uuid.UUID, poc_agent_type: str) -> None:
    """Call the installed hook for a user who was just verified."""
    await _invalidator(user_id, poc_agent_type)
