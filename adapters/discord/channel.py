"""Discord through discord.py: the gateway in, REST out, slash commands and buttons as interactions.

Direct messages always reach the engine; in guild channels and threads only messages that mention
the bot or reply to it. Threads are channels in Discord, so answering in the message's channel
keeps the thread. The message id is the event id: a MESSAGE_CREATE replayed after a gateway
RESUME is answered once. discord.py already waits out 429s and shows typing for as long as asked.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import aiohttp
import discord
import yarl
from discord import app_commands
from starlette.routing import BaseRoute

from adapters.addressing import parse_conversation_id
from adapters.markup import discord_plain, to_discord_markdown
from adapters.outbound import (
    Answer,
    Delivery,
    Part,
    Permanent,
    RetryPolicy,
    StreamedMessage,
    Transient,
    answer,
    split_rendered,
    streamed_message,
)
from adapters.sources import SourceRef, heading, reply_sources
from core.channel import OnNewMessage
from core.commands import menu
from core.delivery.outbox import Outbox, Pending
from core.types import IncomingMessage, Reply, conversation_id

log = logging.getLogger(__name__)

PLATFORM = "discord"
MESSAGE_LIMIT = 2000
CUSTOM_ID_LIMIT = 100
BUTTON_LABEL_LIMIT = 80
ACTION_PREFIX = "engine:"


@dataclass(frozen=True, slots=True)
class DiscordConfig:
    """Built from the DISCORD_* settings (``core.settings.from_settings``), which hold the defaults."""

    SETTINGS_PREFIX: ClassVar[str] = "discord_"

    bot_token: str
    api_url: str
    gateway_url: str
    #: this process's shard and the total; None lets one process take the whole bot
    shard_id: int | None
    shard_count: int | None
    sync_commands: bool
    #: the delivery deadline and backoff (discord.py paces per route bucket itself)
    retry: RetryPolicy
    #: edit the answer into one message as the model writes it
    stream: bool
    stream_interval_s: float
    #: how long sent buttons are tracked in memory; presses are handled by custom id regardless
    view_ttl_s: float = 900.0
    ready_timeout_s: float = 30.0


def classify(error: BaseException) -> Transient | Permanent | None:
    if isinstance(error, discord.RateLimited):  # longer than discord.py was willing to wait itself
        return Transient(error.retry_after)
    if isinstance(error, discord.DiscordServerError):
        return Transient()
    if isinstance(error, discord.HTTPException) and error.status == 429:
        # Still limited after discord.py's own waits, or a 429 without Discord's Via header (the
        # edge's, e.g. Cloudflare's): a pause, not a refusal.
        return Transient(_retry_after(error))
    if isinstance(error, discord.HTTPException):  # 403 cannot message this user, 404 unknown channel …
        return Permanent(f"{error.status} {error.text or ''}".strip())
    if isinstance(error, aiohttp.ClientError | asyncio.TimeoutError | OSError):
        return Transient()
    return None


def _retry_after(error: discord.HTTPException) -> float | None:
    try:
        return float(error.response.headers["Retry-After"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _chat(target: discord.abc.Messageable) -> str:
    """The channel id that delivery keeps order and pacing by."""
    return str(getattr(target, "id", "-"))


def button_view(reply: Reply, ttl_s: float) -> discord.ui.View | None:
    view = discord.ui.View(timeout=ttl_s)
    for button in reply.buttons:
        custom_id = ACTION_PREFIX + button.action
        if len(custom_id) > CUSTOM_ID_LIMIT:
            log.warning("button %r dropped: its action is too long for a custom id", button.label)
            continue
        view.add_item(discord.ui.Button(label=button.label[:BUTTON_LABEL_LIMIT], custom_id=custom_id))
    return view if view.children else None


def source_markdown(ref: SourceRef) -> str:
    if ref.url:  # embeds show no link previews, so no <> around the URL; a ")" would end it early
        return f"[{discord_plain(ref.label)}]({ref.url.replace(')', '%29')})"
    code = ref.label.replace("`", "'")
    return f"`{code}`"


def sources_embed(reply: Reply) -> discord.Embed | None:
    """An embed under the answer listing its sources (links, or file paths); None: no sources."""
    refs = reply_sources(reply)
    if not refs:
        return None
    embed = discord.Embed(description="\n".join(source_markdown(r) for r in refs))
    embed.set_footer(text=f"{heading(len(refs))} from the team's documents")
    return embed


def last_part_kwargs(reply: Reply, ttl_s: float) -> dict:
    """What rides on a reply's last message: its buttons and its sources."""
    kwargs: dict = {}
    if view := button_view(reply, ttl_s):
        kwargs["view"] = view
    if embed := sources_embed(reply):
        kwargs["embed"] = embed
    return kwargs


class DiscordChannel:
    platform = PLATFORM

    def __init__(
        self, on_new_message: OnNewMessage, config: DiscordConfig, outbox: Outbox | None = None
    ) -> None:
        self.on_new_message = on_new_message
        self.config = config
        self.delivery = Delivery(PLATFORM, classify, config.retry, outbox)
        intents = discord.Intents(guilds=True, guild_messages=True, dm_messages=True, message_content=True)
        self.client = discord.Client(
            intents=intents,
            shard_id=config.shard_id,
            shard_count=config.shard_count,
            allowed_mentions=discord.AllowedMentions.none(),  # the bot never pings anyone
            guild_ready_timeout=0,  # answer DMs without waiting for every guild to stream in
        )
        self.tree = app_commands.CommandTree(self.client)
        for name, description in menu().items():
            self.tree.add_command(
                app_commands.Command(
                    name=name, description=description, callback=self._command_callback(name)
                )
            )
        self.client.event(self.on_message)
        self.client.event(self.on_interaction)
        self._task: asyncio.Task[None] | None = None
        self._saved_urls: tuple[str, yarl.URL] | None = None

    # --- lifecycle ---
    async def start(self) -> None:
        # discord.py reads its endpoints from class attributes: one Discord API per process.
        self._saved_urls = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        discord.http.Route.BASE = self.config.api_url.rstrip("/")
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.config.gateway_url)
        self._task = asyncio.create_task(self.client.start(self.config.bot_token), name="discord-gateway")
        ready = asyncio.ensure_future(self.client.wait_until_ready())
        done, _ = await asyncio.wait(
            {ready, self._task}, timeout=self.config.ready_timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            await self.stop()
            if self._task.done() and self._task.exception():
                raise self._task.exception()  # type: ignore[misc]
            raise TimeoutError("the Discord gateway did not become ready")
        if self.config.sync_commands:
            await self.delivery.send("-", self.tree.sync)
        log.info(
            "discord: ready as %s (shard %s of %s)",
            self.client.user,
            self.config.shard_id,
            self.config.shard_count,
        )

    async def drain(self, timeout_s: float) -> bool:
        """Graceful shutdown: finish the answers on their way within ``timeout_s``, give up on the
        rest (False). The gateway stays connected until ``stop``: discord.py closes its HTTP session
        with it, which those answers need, and Discord never sends again a message the bot missed,
        so one arriving now is better answered within the same grace than dropped."""
        return await self.delivery.drain(timeout_s)

    async def stop(self) -> None:
        await self.client.close()
        if self._task:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._saved_urls:
            discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved_urls

    def routes(self) -> list[BaseRoute]:
        """Discord talks to us over the gateway only: nothing to mount on the web server."""
        return []

    # --- outgoing ---
    async def send(self, conversation_id: str, reply: Reply, pending: Pending | None = None) -> None:
        """Send proactively (an agent's reply) to the conversation's channel or thread.

        Raises ``UndeliverableError`` or ``DeliveryDeadlineError`` when it cannot arrive, so the
        handoff outbox can tell the agent.
        """
        dest = parse_conversation_id(conversation_id, PLATFORM)
        target = self.client.get_partial_messageable(int(dest.chat_id))
        parts = functools.partial(self._parts, target)
        await self.delivery.proactive(dest.chat_id, conversation_id, reply, parts, pending)

    def _parts(
        self, target: discord.abc.Messageable, reply: Reply, reference: discord.Message | None = None
    ) -> list[Part]:
        chunks = split_rendered(reply.text, MESSAGE_LIMIT, to_discord_markdown)
        parts = []
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            kwargs = last_part_kwargs(reply, self.config.view_ttl_s) if last else {}
            send_kwargs = dict(kwargs)
            if reference is not None and index == 0:
                send_kwargs["reference"] = reference.to_reference(fail_if_not_exists=False)
            # The streamed message was posted with the reference; an edit keeps it.
            edit = functools.partial(self._edit, content=chunk, **kwargs)
            parts.append(Part(functools.partial(target.send, chunk, **send_kwargs), edit))
        return parts

    @staticmethod
    async def _edit(message: discord.Message, **changes: Any) -> None:
        await message.edit(**changes)

    def _streamed_message(
        self, target: discord.abc.Messageable, reference: discord.Message | None
    ) -> StreamedMessage[discord.Message]:
        async def post(text: str) -> discord.Message:
            # Partials go straight to the API, not through ``delivery``: a partial that failed is not
            # retried, the answer follows whole instead.
            kwargs: dict[str, Any] = (
                {"reference": reference.to_reference(fail_if_not_exists=False)} if reference else {}
            )
            return await target.send(text, **kwargs)

        async def edit(message: discord.Message, text: str) -> None:
            await message.edit(content=text)

        async def delete(message: discord.Message) -> None:
            await message.delete()

        return streamed_message(
            self.delivery,
            _chat(target),
            post,
            edit,
            delete,
            interval_s=self.config.stream_interval_s,
            limit=MESSAGE_LIMIT,
            render=to_discord_markdown,
        )

    def _followup_parts(self, interaction: discord.Interaction, reply: Reply) -> list[Part]:
        chunks = split_rendered(reply.text, MESSAGE_LIMIT, to_discord_markdown)
        parts = []
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            kwargs = last_part_kwargs(reply, self.config.view_ttl_s) if last else {}
            parts.append(Part(functools.partial(interaction.followup.send, chunk, **kwargs)))
        return parts

    async def _typing_while(self, channel: discord.abc.Messageable, work: Awaitable[Answer]) -> Answer:
        """Show "typing…" while the engine works; discord.py renews it every 5 s until the block ends."""
        task = asyncio.ensure_future(work)  # the engine starts now, not after the typing request
        try:
            async with channel.typing():
                return await task
        except discord.HTTPException as error:  # cosmetic (e.g. no permission): never lose the answer
            log.debug("discord: typing failed: %s", error)
            return await task

    # --- incoming ---
    @staticmethod
    def _is_dm(message: discord.Message) -> bool:
        # Not ``guild is None``: a message from a guild not cached yet has no guild either.
        return isinstance(message.channel, discord.DMChannel)

    def _addressed(self, message: discord.Message) -> bool:
        me = self.client.user
        if self._is_dm(message) or me is None:
            return True
        if me in message.mentions:
            return True
        resolved = message.reference.resolved if message.reference else None
        return isinstance(resolved, discord.Message) and resolved.author.id == me.id

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or not self._addressed(message):
            return
        me = self.client.user
        text = re.sub(rf"<@!?{me.id}>", " ", message.content) if me else message.content
        is_group = not self._is_dm(message)
        cid = conversation_id(PLATFORM, str(message.channel.id), None, str(message.author.id), is_group)
        incoming = IncomingMessage(
            PLATFORM,
            cid,
            str(message.author.id),
            " ".join(text.split()),
            event_id=str(message.id),
            timestamp=message.created_at.timestamp(),
            user_name=message.author.display_name,
            user_handle=message.author.name,
        )
        reference = message if is_group else None
        streamed = self._streamed_message(message.channel, reference) if self.config.stream else None
        await answer(
            self.delivery,
            self.on_new_message,
            incoming,
            _chat(message.channel),
            functools.partial(self._parts, message.channel, reference=reference),
            streamed,
            while_waiting=functools.partial(self._typing_while, message.channel),
        )

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        data: Mapping[str, object] = interaction.data or {}  # one of several payload TypedDicts
        custom_id = str(data.get("custom_id", ""))
        if interaction.type != discord.InteractionType.component or not custom_id.startswith(ACTION_PREFIX):
            return
        await interaction.response.defer()  # acknowledge within 3 s; the answer is a new message
        channel = interaction.channel
        if channel is None or interaction.channel_id is None:
            return
        user = str(interaction.user.id)
        cid = conversation_id(
            PLATFORM, str(interaction.channel_id), None, user, interaction.guild_id is not None
        )
        incoming = IncomingMessage(
            PLATFORM,
            cid,
            user,
            "",
            event_id=str(interaction.id),
            action=custom_id.removeprefix(ACTION_PREFIX),
            user_name=interaction.user.display_name,
        )
        # A button press never generates (actions are answered by the engine's rules): no streaming.
        target: discord.abc.Messageable = channel  # type: ignore[assignment]
        parts = functools.partial(self._parts, target)
        await answer(self.delivery, self.on_new_message, incoming, _chat(target), parts)

    def _command_callback(self, name: str):
        async def command(interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True)  # "Bot is thinking…" while the engine works
            user = str(interaction.user.id)
            cid = conversation_id(
                PLATFORM, str(interaction.channel_id), None, user, interaction.guild_id is not None
            )
            incoming = IncomingMessage(PLATFORM, cid, user, f"/{name}", event_id=str(interaction.id))
            parts = functools.partial(self._followup_parts, interaction)
            answered = await answer(
                self.delivery, self.on_new_message, incoming, str(interaction.channel_id), parts
            )
            if not answered.replies:  # nothing to say: don't leave "thinking…" on screen
                await self.delivery.send(str(interaction.channel_id), interaction.delete_original_response)

        return command
