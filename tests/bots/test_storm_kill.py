"""kill -9 of ``chatbot run`` mid-storm, while replies wait for a retry: after the restart each one
arrives exactly once (the outbox in Redis outlives the process). Shortened from benchmarks/faults.py."""

from __future__ import annotations

import pytest

from tests.storm import BotProcess, Storm, platform, run_storm

pytestmark = pytest.mark.slow

#: long 429s: replies are still waiting when the bot dies
KILL_STORM = Storm(rate_limits=0.6, bursts=0.2, drops=0.2, retry_after_s=3.0)


@pytest.mark.parametrize("name", ["telegram", "slack", "discord", "whatsapp"])
async def test_replies_waiting_for_a_retry_survive_a_kill_minus_nine(
    name, redis_server, redis, tiny_model_dir
) -> None:
    async with platform(name) as where:
        bot = BotProcess(where, tiny_model_dir, redis_server.url, "sk:", deadline_s=120)
        await bot.start()
        try:
            result = await run_storm(where, redis, "sk:", users=4, messages=2, storm=KILL_STORM, bot=bot)
        finally:
            await bot.stop()
    assert result.kills == 1 and result.pending_at_kill > 0  # killed while replies were waiting
    assert (result.sent, result.delivered, result.lost, result.doubled) == (8, 8, 0, 0)
    assert await redis.zcard(f"sk:outbox:pending:{name}") == 0
