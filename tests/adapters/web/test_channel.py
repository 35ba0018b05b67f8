"""The web chat WebSocket protocol against the real app, engine, Redis and tiny model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest
import websockets

from adapters.web.channel import ChannelUnavailableError, WebChatChannel, reply_frame
from bots.web.app import create_web_app
from core.delivery.outbox import Outbox, Pending
from core.engine import DialogueEngine
from core.memory.store import ContextStore
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import Button, IncomingMessage, Reply
from tests.asgi_server import running_server
from tests.configs import configured


@pytest.fixture
async def chat(redis, tiny_model_dir):
    backend = TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=6, num_beams=2),
    )
    channel = WebChatChannel(DialogueEngine(ContextStore(redis, prefix="wc:"), backend).handle)
    async with running_server(create_web_app(channel.routes())) as url:
        yield channel, url.replace("http", "ws") + "/ws/chat"
    await backend.aclose()


async def frames(ws, count: int, partials: list | None = None) -> list[dict]:
    """The next ``count`` frames other than streamed partial replies (collected into ``partials``)
    and the history frame that opens every connection."""
    out: list[dict] = []
    while len(out) < count:
        frame = json.loads(await ws.recv())
        if frame["type"] == "history":
            continue
        if frame["type"] == "partial":
            if partials is not None:
                partials.append(frame)
            continue
        out.append(frame)
    return out


async def test_a_message_gets_typing_streamed_text_then_replies(chat) -> None:
    _, url = chat
    async with websockets.connect(url + "?client=client-0001") as ws:
        await ws.send(json.dumps({"id": "m1", "text": "hello"}))
        partials: list[dict] = []
        typing, disclosure, answer = await frames(ws, 3, partials)
        assert partials and all(p["text"] for p in partials)  # the reply so far, while generating
        assert typing == {"type": "typing"}
        assert disclosure["buttons"] == [{"label": "Talk to a human", "action": "human"}]
        assert answer["type"] == "reply" and answer["meta"]["model_version"] == "tiny-v1"


async def test_a_resent_frame_is_answered_once(chat) -> None:
    _, url = chat
    async with websockets.connect(url + "?client=client-0002") as ws:
        await ws.send(json.dumps({"id": "m1", "text": "hello"}))
        await frames(ws, 3)
        await ws.send(json.dumps({"id": "m1", "text": "hello"}))  # e.g. resent after a reconnect
        await ws.send(json.dumps({"id": "m2", "text": "/help"}))
        typing, again_typing, help_reply = await frames(ws, 3)
        assert typing["type"] == again_typing["type"] == "typing"
        assert "/reset" in help_reply["text"]


@pytest.mark.parametrize(
    "raw, error",
    [
        ("not json", "frames must be JSON objects"),
        ("[1, 2]", "frames must be JSON objects"),
        ('{"text": 5}', "`text` and `action` must be strings"),
    ],
)
async def test_malformed_frames_get_a_clear_error_and_the_socket_stays_open(chat, raw, error) -> None:
    _, url = chat
    async with websockets.connect(url + "?client=client-0003") as ws:
        await ws.send(raw)
        assert await frames(ws, 1) == [{"type": "error", "error": error}]
        await ws.send(json.dumps({"id": "ok", "text": "/help"}))
        assert (await frames(ws, 2))[1]["type"] == "reply"


async def test_a_bad_client_id_is_refused(chat) -> None:
    _, url = chat
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with websockets.connect(url + "?client=../../etc"):
            pass
    assert refused.value.response.status_code == 403


async def test_proactive_send_reaches_every_open_tab_or_raises(chat) -> None:
    channel, url = chat
    with pytest.raises(ChannelUnavailableError):
        await channel.send("web:client-0004", Reply("anyone?"))
    async with (
        websockets.connect(url + "?client=client-0004") as tab1,
        websockets.connect(url + "?client=client-0004") as tab2,
    ):
        await tab1.send(json.dumps({"id": "x", "text": "/help"}))  # both tabs are registered by now
        await frames(tab1, 2)
        await channel.send("web:client-0004", Reply("An agent here.", [Button("Thanks", "thanks")]))
        for tab in (tab1, tab2):
            (frame,) = await frames(tab, 1)
            assert frame["text"] == "An agent here." and frame["buttons"][0]["action"] == "thanks"


async def test_a_returning_user_sees_what_an_agent_wrote_while_the_page_was_closed(redis, tiny_model_dir):
    from core.delivery.outbox import PermanentDeliveryError
    from core.types import Role, Turn

    store = ContextStore(redis, prefix="wch:")
    backend = TransformersBackend(tiny_model_dir, Reranker([]), configured(DecodingConfig, max_new_tokens=4))
    channel = WebChatChannel(DialogueEngine(store, backend).handle, stream=False, history=store.history)
    async with running_server(create_web_app(channel.routes())) as url:
        ws_url = url.replace("http", "ws") + "/ws/chat?client=client-0005"
        async with websockets.connect(ws_url) as ws:
            assert json.loads(await ws.recv()) == {"type": "history", "messages": []}
            await ws.send(json.dumps({"id": "m1", "text": "hello"}))
            *_, answer = await frames(ws, 3)
        # The page is closed: the agent's reply cannot be pushed (permanently, so no retries)...
        with pytest.raises(PermanentDeliveryError, match="no web chat open"):
            await channel.send("web:client-0005", Reply("Agent here, sorry for the wait."))
        await store.append("web:client-0005", "web", "client-0005", Turn(Role.AGENT, "Agent here."))
        # ...and is there when the user comes back.
        async with websockets.connect(ws_url) as ws:
            history = json.loads(await ws.recv())
    await backend.aclose()
    assert history["type"] == "history"
    assert [m["role"] for m in history["messages"]] == ["user", "assistant", "agent"]
    assert history["messages"][0]["text"] == "hello"
    assert history["messages"][1]["text"] == answer["text"]
    assert history["messages"][2]["text"] == "Agent here."


async def test_drain_answers_the_message_in_flight_and_closes_on_a_new_one() -> None:
    asked, release = asyncio.Event(), asyncio.Event()

    async def held(message: IncomingMessage, stream=None, stream_interval_s: float = 0.0) -> list[Reply]:
        asked.set()
        await release.wait()
        return [Reply(f"answer to {message.text}")]

    channel = WebChatChannel(held, stream=False)
    async with running_server(create_web_app(channel.routes())) as url:
        async with websockets.connect(url.replace("http", "ws") + "/ws/chat?client=client-0006") as ws:
            await ws.recv()  # history
            await ws.send(json.dumps({"id": "m1", "text": "first"}))
            await asyncio.wait_for(asked.wait(), 10)
            draining = asyncio.create_task(channel.drain(10))
            await ws.send(json.dumps({"id": "m2", "text": "second"}))  # while stopping
            release.set()
            assert await draining
            received = [json.loads(await ws.recv()) for _ in range(2)]
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await ws.recv()
    assert received == [{"type": "typing"}, {**reply_frame(Reply("answer to first")), "type": "reply"}]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012  # m2 unanswered: resent later


async def test_an_answer_is_in_the_outbox_before_it_is_sent_and_leaves_it_once_sent(
    redis, monkeypatch
) -> None:
    """The web chat's answers take the platforms' outbound path: a process that dies mid-answer
    leaves it in Redis, for a process holding the page's socket to send."""

    async def engine(message: IncomingMessage, stream=None, stream_interval_s: float = 0.0) -> list[Reply]:
        return [Reply(f"answer to {message.text}")]

    outbox = Outbox(ContextStore(redis, prefix="wob:"), "this-process")
    recorded: list[int] = []
    open_ = outbox.open

    async def spied(platform: str, cid: str, replies: Sequence[Reply]) -> list[Pending]:
        pendings = await open_(platform, cid, replies)
        recorded.append(await redis.zcard(outbox.pending_key(platform)))  # before the first attempt
        return pendings

    monkeypatch.setattr(outbox, "open", spied)
    channel = WebChatChannel(engine, stream=False, outbox=outbox)
    async with running_server(create_web_app(channel.routes())) as url:
        async with websockets.connect(url.replace("http", "ws") + "/ws/chat?client=client-0009") as ws:
            await ws.send(json.dumps({"id": "m1", "text": "hello"}))
            _, reply = await frames(ws, 2)
    assert reply["text"] == "answer to hello"
    assert recorded == [1] and await redis.zcard(outbox.pending_key("web")) == 0


async def test_with_shown_lines_a_reconnect_restores_every_line_and_only_unused_buttons(redis) -> None:
    """Notices, buttons, sources and an agent's name come back on the next connect; a pressed row
    does not, a resent message is kept once."""
    from core.memory.shown import ShownLines

    async def answer(message: IncomingMessage, stream=None, stream_interval_s: float = 0.0) -> list[Reply]:
        if message.action:
            return [Reply("Thanks for the feedback!")]
        sources = [
            {"title": "Guide", "section": "", "source": "guide.md", "citation": "guide.md", "url": None}
        ]
        return [Reply("From the guide.", [Button("👍", "feedback:up:r1")], {"sources": sources})]

    channel = WebChatChannel(answer, shown=ShownLines(redis, "ws:"))
    async with running_server(create_web_app(channel.routes())) as url:
        ws_url = url.replace("http", "ws") + "/ws/chat?client=client-shown"
        cid = "web:client-shown"
        async with websockets.connect(ws_url) as ws:
            assert json.loads(await ws.recv()) == {"type": "history", "messages": []}
            await ws.send(json.dumps({"id": "m1", "text": "how?"}))
            await frames(ws, 2)
            # Resent on this connection (the page's resend every 10 s): answered here already,
            # so nothing again (a repeated answer would show twice), and kept once.
            await ws.send(json.dumps({"id": "m1", "text": "how?", "resent": True}))
            await channel.send(cid, Reply("Ada here.", metadata={"agent": "ada", "agent_name": "Ada"}))
            assert (await frames(ws, 1))[0]["agent"] == "Ada"
        with pytest.raises(ChannelUnavailableError):  # the page is closed: not sent, but kept
            await channel.send(cid, Reply("Still there?", [Button("1", "csat:s:1")]))
        async with websockets.connect(ws_url) as ws:
            history = json.loads(await ws.recv())["messages"]
            shown = [(m["role"], m["text"]) for m in history]
            assert shown == [
                ("user", "how?"), ("assistant", "From the guide."), ("agent", "Ada here."),
                ("assistant", "Still there?"),
            ]  # fmt: skip
            assert history[1]["buttons"] == [{"label": "👍", "action": "feedback:up:r1"}]
            assert history[1]["sources"][0]["label"] == "guide.md" and history[2]["name"] == "Ada"
            await ws.send(json.dumps({"id": "m2", "action": "feedback:up:r1"}))
            await frames(ws, 2)
        async with websockets.connect(ws_url) as ws:
            history = json.loads(await ws.recv())["messages"]
            assert "buttons" not in history[1]  # used: not offered again
            assert history[-2] == {**history[-2], "role": "user", "text": "👍", "action": "feedback:up:r1"}
