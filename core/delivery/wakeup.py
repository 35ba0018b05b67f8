"""Take a message the moment another process records it for a platform this process runs.

A process that cannot send a message itself (the agent console in a ``--only web`` process replying
to a Telegram user, or a web chat replica without the user's socket) records it unclaimed in the
outbox and publishes on the platform's wake channel; each process running that platform listens
there and scans at once, so the message goes out within milliseconds, not at the next periodic
recovery round (``DELIVERY_RECOVERY_INTERVAL_S``), which stays as the safety net for a wake missed
while a process reconnected to Redis. ``PUBLISH`` answers how many processes listened: none means
no process runs the platform, and the console says the message waits for one.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from core.delivery.outbox import Outbox
from core.memory.connection import as_text

log = logging.getLogger(__name__)

#: after losing Redis, how long to wait before subscribing again
RECONNECT_S = 1.0


async def take_when_woken(outbox: Outbox) -> None:
    """Listen on the wake channels of this process's platforms until cancelled (at shutdown)."""
    if outbox.store is None or not outbox.platforms:
        return
    keys = outbox.store.keys
    channels = {keys.outbox_wake(platform): platform for platform in outbox.platforms}
    while True:
        pubsub = outbox.store.redis.pubsub()
        try:
            await pubsub.subscribe(*channels)
            # Subscribed first, then one scan: nothing recorded before the subscription is missed.
            await outbox.recover()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=30.0)
                if message is None:
                    continue
                platform = channels.get(as_text(message["channel"]))
                if platform is not None:
                    await outbox.recover([platform])
        except RedisError as error:
            log.warning("outbox wake-ups lost (%s); listening again in %.0f s", error, RECONNECT_S)
            await asyncio.sleep(RECONNECT_S)
        except Exception:  # a bug must not end the wake-ups: the periodic round would be all left
            log.exception("outbox wake-up failed; listening again in %.0f s", RECONNECT_S)
            await asyncio.sleep(RECONNECT_S)
        finally:
            try:
                await pubsub.aclose()
            except RedisError:
                pass
