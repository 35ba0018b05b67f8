"""The agents' inbox through the engine and the handoff service, against a real Redis: the rating
after a resolve, business hours at handoff time, notes kept apart, and /forget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core import texts
from core.delivery.outbox import Outbox
from core.engine import DialogueEngine
from core.handoff.agents import AgentDirectory
from core.handoff.csat import CSAT_ACTION
from core.handoff.service import LEAVE_MESSAGE_ACTION, HandoffError, HandoffService
from core.memory.chatlog import ChatLog
from core.memory.store import ContextStore
from core.model.huggingface import DecodingConfig, TransformersBackend
from core.model.scoring import Reranker, length_normalised_logprob
from core.types import IncomingMessage, Mode, Reply
from tests.configs import configured

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Inbox:
    platform = "web"

    def __init__(self) -> None:
        self.sent: list[tuple[str, Reply]] = []

    async def send(self, conversation_id: str, reply: Reply, pending: object = None) -> None:
        self.sent.append((conversation_id, reply))


@pytest.fixture(scope="module")
def backend(tiny_model_dir) -> TransformersBackend:
    return TransformersBackend(
        tiny_model_dir,
        Reranker([length_normalised_logprob()]),
        configured(DecodingConfig, max_new_tokens=4, num_beams=1),
    )


@pytest.fixture
async def world(redis, backend):
    store = ContextStore(redis, prefix="ib:")
    agents = AgentDirectory(redis, "ib:")
    await agents.add("ada", "correct horse", "Ada", teams=("billing",))
    await agents.add("bob", "battery staple", "Bob", teams=("sales",))
    inbox = Inbox()
    outbox = Outbox()
    outbox.register(inbox)
    chatlog = ChatLog(redis, "ib:")
    handoff = HandoffService(store, agents, outbox, chatlog=chatlog)
    return DialogueEngine(store, backend, handoff=handoff, chatlog=chatlog), handoff, inbox, chatlog


def msg(text: str = "", action: str | None = None, name: str = "") -> IncomingMessage:
    return IncomingMessage("web", "web:c1", "u1", text, action=action, user_name=name)


async def test_resolve_asks_for_a_rating_and_the_first_press_counts(world) -> None:
    engine, handoff, inbox, chatlog = world
    await engine.handle(msg("/human", name="Sam"))
    assert (await handoff.store.state("web:c1")).fields["user_name"] == "Sam"
    await handoff.claim("web:c1", "ada")
    await handoff.agent_reply("web:c1", "ada", "Sorted, Sam.")
    await handoff.resolve("web:c1", "ada")
    question, back = (reply for _, reply in inbox.sent[-2:])
    assert question.text == texts.CSAT_QUESTION.format(name="Ada") and back.text == texts.BOT_BACK
    assert [b.label for b in question.buttons] == ["1", "2", "3", "4", "5"]
    assert all(b.action.startswith(CSAT_ACTION + ":") for b in question.buttons)

    assert [r.text for r in await engine.handle(msg(action=question.buttons[3].action))] == [
        texts.CSAT_THANKS
    ]
    assert [r.text for r in await engine.handle(msg(action=question.buttons[0].action))] == [
        texts.CSAT_ALREADY
    ]
    survey = await handoff.csat.get("web:c1")
    assert (survey.score, survey.agent, survey.team) == (4, "ada", "billing")  # the agent's team
    (event,) = [f async for _, f in chatlog.entries() if f["type"] == "csat"]
    assert (event["score"], event["agent"], event["team"], event["cid"]) == ("4", "ada", "billing", "web:c1")
    figures = await handoff.csat.figures()
    assert figures["agents"]["ada"].mean == 4.0 and figures["teams"]["billing"].ratings == 1
    # A made-up rating action is not a rating.
    assert [r.text for r in await engine.handle(msg(action="csat:nope:9"))] == [texts.UNKNOWN_ACTION]


async def test_closing_an_unclaimed_conversation_asks_for_no_rating(world) -> None:
    engine, handoff, inbox, _ = world
    await engine.handle(msg("/human"))
    await handoff.resolve("web:c1", "bob")
    assert [r.text for _, r in inbox.sent] == [texts.BOT_BACK]
    assert await handoff.csat.get("web:c1") is None


async def test_outside_business_hours_the_user_learns_when_and_can_leave_a_message(world) -> None:
    engine, handoff, _, _ = world
    now = datetime.now(UTC)
    tomorrow = DAYS[(now + timedelta(days=1)).weekday()]
    await handoff.hours.save("", "UTC", {tomorrow: "09:00-17:00"})  # closed all of today
    replies = await engine.handle(msg("/human"))
    assert replies[-1].text == texts.AFTER_HOURS.format(when="tomorrow at 09:00 (UTC time)")
    assert replies[-1].metadata["after_hours"] is True
    assert [b.action for b in replies[-1].buttons][0] == LEAVE_MESSAGE_ACTION
    (entry,) = await handoff.queue()  # queued all the same, for the morning
    assert entry.mode == Mode.QUEUED and not entry.left_message
    assert (
        entry.back_at
        == datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC).timestamp() + 9 * 3600
    )
    await handoff.redis.hset("ib:conv:web:c1:state", "requested_at", "0")
    assert await handoff.sweep_waiting() == []  # already offered: not told twice overnight
    assert [r.text for r in await engine.handle(msg(action=LEAVE_MESSAGE_ACTION))] == [texts.MESSAGE_KEPT]
    assert await engine.handle(msg("my card was charged twice, please call me back")) == []
    (entry,) = await handoff.queue()
    assert entry.left_message  # the console marks it


async def test_inside_business_hours_the_handoff_is_as_before(world) -> None:
    engine, handoff, _, _ = world
    await handoff.hours.save("", "UTC", dict.fromkeys(DAYS, "00:00-24:00"))
    replies = await engine.handle(msg("/human"))
    assert replies[-1].text == texts.QUEUED.format(position=1) and not replies[-1].buttons
    await engine.handle(msg("hello?"))
    assert not (await handoff.queue())[0].left_message


async def test_notes_stay_with_the_agents_and_go_with_forget(world, redis) -> None:
    engine, handoff, inbox, chatlog = world
    await engine.handle(msg("/human"))
    await handoff.add_note("web:c1", "ada", "Asked for a callback; VIP.")
    with pytest.raises(HandoffError, match="Write the note"):
        await handoff.add_note("web:c1", "ada", " ")
    with pytest.raises(HandoffError, match="no such conversation"):
        await handoff.add_note("web:nobody", "ada", "x")
    await handoff.claim("web:c1", "ada")
    await handoff.resolve("web:c1", "ada")
    assert [n.text for n in await handoff.notes.list("web:c1")] == ["Asked for a callback; VIP."]
    everything = [r.text for _, r in inbox.sent] + [t.text for t in await handoff.store.history("web:c1")]
    everything += [f.get("text", "") async for _, f in chatlog.entries()]
    assert not any("callback" in text for text in everything)
    await engine.handle(msg("/forget"))
    assert await handoff.notes.list("web:c1") == [] and await handoff.csat.get("web:c1") is None
    assert not [k async for k in redis.scan_iter("ib:conv:web:c1:*")]


async def test_a_routed_conversation_takes_notes_from_its_team_only(world) -> None:
    _, handoff, _, _ = world
    await handoff.store.update_state("web:c2", {"platform": "web", "user": "u2"})
    await handoff.request("web:c2", "sensitive:payment_dispute", team="billing")
    with pytest.raises(HandoffError, match="billing team"):
        await handoff.add_note("web:c2", "bob", "not my team")
    await handoff.add_note("web:c2", "ada", "refund pending")
