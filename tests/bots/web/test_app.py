"""The web app's own endpoints: health and Prometheus metrics."""

from __future__ import annotations

import httpx

from bots.web.app import create_web_app
from core.monitoring import metrics


async def test_metrics_endpoint_exposes_the_engine_counters() -> None:
    metrics.MESSAGES_IN.labels("web").inc()
    metrics.HANDOFFS.labels("user_request").inc()
    metrics.MODEL.info({"version": "tiny-v1"})
    transport = httpx.ASGITransport(create_web_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        page = await client.get("/metrics")
    assert page.headers["content-type"].startswith("text/plain")
    for name in (
        'chatbot_messages_in_total{platform="web"}',
        'chatbot_handoffs_total{reason="user_request"}',
        "chatbot_engine_seconds_bucket",
        "chatbot_model_seconds_bucket",
        "chatbot_handoff_wait_seconds_bucket",
        'chatbot_model_info{version="tiny-v1"}',
    ):
        assert name in page.text
