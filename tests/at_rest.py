"""Looking for high-risk data at rest: every Redis key and value (of every type) and files on disk.

A card number is looked for in the digits of what is searched, whatever separated them (spaces,
dashes, JSON, RESP framing); a key by its secret part and by a 12-character piece of it.
"""

from __future__ import annotations

import re
from pathlib import Path

from redis.asyncio import Redis

from core.safety.pii import luhn_ok

#: a Luhn-valid card and an API key, as users type them; the tests look for them everywhere
CARD = "4929573183465414"
CARD_TYPED = f"{CARD[:4]} {CARD[4:8]}-{CARD[8:12]} {CARD[12:]}"
KEY_SECRET = "fKVxG1hwZdHP9Hn4WekhfDCZoY8gda22p3wlAPgB"
KEY = "sk-proj-" + KEY_SECRET
MESSAGE = f"my card is {CARD_TYPED} and my key is {KEY}"
#: what a masked MESSAGE keeps: the tests check it is there, so that a search of nothing cannot pass
MASKED = "my card is [card •••• 5414] and my key is [secret sk-proj-•••]"
assert luhn_ok(CARD)


async def redis_contents(redis: Redis) -> bytes:
    """Every key of the database and every value in it (strings, hashes, lists, sets, sorted sets,
    streams), joined by newlines."""
    chunks: list[bytes] = []
    async for key in redis.scan_iter(count=1000):
        chunks.append(key)
        kind = (await redis.type(key)).decode()
        if kind == "string":
            chunks.append(await redis.get(key) or b"")
        elif kind == "hash":
            chunks += [part for item in (await redis.hgetall(key)).items() for part in item]
        elif kind == "list":
            chunks += await redis.lrange(key, 0, -1)
        elif kind == "set":
            chunks += list(await redis.smembers(key))
        elif kind == "zset":
            chunks += await redis.zrange(key, 0, -1)
        elif kind == "stream":
            for entry_id, fields in await redis.xrange(key):
                chunks += [entry_id, *(part for item in fields.items() for part in item)]
        elif kind != "none":  # "none": expired while we looked
            raise AssertionError(f"unexpected Redis type {kind} of {key!r}")
    return b"\n".join(chunks)


def files_under(*paths: Path) -> bytes:
    """The bytes of every file at or under these paths (an AOF directory, a spool file)."""
    found = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    return b"\n".join(f.read_bytes() for f in found)


def leaks(haystack: bytes) -> list[str]:
    """What of CARD and KEY is in ``haystack``: empty when neither is."""
    found = []
    if CARD.encode() in re.sub(rb"\D", b"", haystack):
        found.append("card digits")
    if KEY_SECRET.encode() in haystack or KEY_SECRET[8:20].encode() in haystack:
        found.append("key")
    return found
