"""Telegram through python-telegram-bot: updates in (long polling or webhook), replies out.

Private chats always reach the engine; in groups only messages that mention the bot, reply to it
or carry a ``/command@bot``. Replies in groups quote the user's message and stay in its forum
topic. ``update_id`` is the event id, so an update Telegram delivers twice is answered once.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import html
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import ClassVar, Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatAction, ChatType, InlineKeyboardButtonLimit, MessageLimit, ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    CallbackQueryHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from adapters.addressing import parse_conversation_id
from adapters.markup import to_telegram_html
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
from adapters.sources import SourceRef, footer, reply_sources, with_footer
from core.channel import OnNewMessage
from core.commands import menu
from core.delivery.outbox import Outbox, Pending
from core.types import IncomingMessage, Reply, conversation_id

log = logging.getLogger(__name__)

PLATFORM = "telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
ALLOWED_UPDATES = [Update.MESSAGE, Update.CALLBACK_QUERY]
POLL_READ_MARGIN_S = 5.0


@dataclass(frozen=True, slots=True)
class TelegramConfig:
    """Built from the TELEGRAM_* settings (``core.settings.from_settings``), which hold the defaults."""

    SETTINGS_PREFIX: ClassVar[str] = "telegram_"

    bot_token: str
    api_url: str
    mode: Literal["polling", "webhook"]
    #: public HTTPS URL Telegram posts updates to (webhook mode)
    webhook_url: str | None
    webhook_secret: str | None
    webhook_path: str
    poll_timeout_s: float
    #: updates handled at once; the engine keeps each conversation in order itself
    concurrency: int
    max_rate_per_s: float
    group_max_rate_per_min: float
    #: the delivery deadline and backoff, and TELEGRAM_CHAT_INTERVAL_S between sends to one chat
    retry: RetryPolicy
    #: edit the answer into one message as the model writes it
    stream: bool
    stream_interval_s: float
    #: Telegram shows "typing…" for 5 s; renewed a little sooner
    typing_interval_s: float = 4.0
    #: 429s PTB's limiter waits out itself (pausing every request, as Telegram asks) within one attempt
    rate_limit_retries: int = 3

    def __post_init__(self) -> None:
        if self.mode == "webhook" and not (self.webhook_url and self.webhook_secret):
            raise ValueError("Telegram webhook mode needs TELEGRAM_WEBHOOK_URL and TELEGRAM_WEBHOOK_SECRET")


def classify(error: BaseException) -> Transient | Permanent | None:
    if isinstance(error, RetryAfter):
        return Transient(
            error.retry_after.total_seconds()
            if hasattr(error.retry_after, "total_seconds")
            else float(error.retry_after)
        )
    if isinstance(error, Forbidden):  # blocked by the user, kicked from the group
        return Permanent(error.message)
    if isinstance(error, BadRequest):  # chat not found, message malformed: retrying won't help
        return Permanent(error.message)
    if isinstance(error, NetworkError):  # includes TimedOut and 5xx answers
        return Transient()
    return None


def _thread(thread_id: int | None) -> str | None:
    return str(thread_id) if thread_id else None


def is_not_modified(error: BadRequest) -> bool:
    """Telegram refuses an edit that changes nothing; the message already says what we wanted."""
    return "message is not modified" in error.message.lower()


def source_html(ref: SourceRef) -> str:
    label = html.escape(ref.label, quote=False)
    return f'<a href="{html.escape(ref.url, quote=True)}">{label}</a>' if ref.url else f"<i>{label}</i>"


def sources_html(reply: Reply) -> str:
    """The reply's sources under it: links, or the file's path and section (empty: none)."""
    return footer(reply_sources(reply), source_html, lambda text: f"<b>{text}</b>")


def keyboard(reply: Reply) -> InlineKeyboardMarkup | None:
    rows = []
    for button in reply.buttons:
        if len(button.action.encode()) > InlineKeyboardButtonLimit.MAX_CALLBACK_DATA:
            log.warning("button %r dropped: its action is too long for callback data", button.label)
            continue
        rows.append([InlineKeyboardButton(button.label, callback_data=button.action)])
    return InlineKeyboardMarkup(rows) if rows else None


class TelegramChannel:
    platform = PLATFORM

    def __init__(
        self, on_new_message: OnNewMessage, config: TelegramConfig, outbox: Outbox | None = None
    ) -> None:
        self.on_new_message = on_new_message
        self.config = config
        self.delivery = Delivery(PLATFORM, classify, config.retry, outbox)
        builder = (
            Application.builder()
            .token(config.bot_token)
            .base_url(f"{config.api_url.rstrip('/')}/bot")
            .base_file_url(f"{config.api_url.rstrip('/')}/file/bot")
            # PTB's limiter: overall and per-group throughput, and it waits out 429s itself.
            .rate_limiter(
                AIORateLimiter(
                    overall_max_rate=config.max_rate_per_s,
                    group_max_rate=config.group_max_rate_per_min,
                    max_retries=config.rate_limit_retries,
                )
            )
            .concurrent_updates(config.concurrency)
            # the server holds a poll for poll_timeout_s; give the HTTP read a little longer
            .get_updates_read_timeout(config.poll_timeout_s + POLL_READ_MARGIN_S)
        )
        if config.mode == "webhook":
            builder = builder.updater(None)
        self.app: Application = builder.build()
        self.app.add_handler(CallbackQueryHandler(self._on_button))
        self.app.add_handler(MessageHandler(filters.TEXT, self._on_message))
        self.app.add_error_handler(self._on_error)
        self._background: set[asyncio.Future[None]] = set()
        #: past the shutdown's grace period: updates still queued are left unanswered
        self._abandoned = False

    # --- lifecycle ---
    async def start(self) -> None:
        await self.app.initialize()  # getMe: the bot's id and username, for mentions
        await self.app.start()
        commands = [BotCommand(name, description) for name, description in menu().items()]
        await self.delivery.send("-", lambda: self.app.bot.set_my_commands(commands))
        if self.config.mode == "webhook":
            await self.app.bot.set_webhook(
                str(self.config.webhook_url),
                secret_token=self.config.webhook_secret,
                allowed_updates=ALLOWED_UPDATES,
            )
        else:
            assert self.app.updater is not None
            await self.app.updater.start_polling(
                timeout=int(self.config.poll_timeout_s), allowed_updates=ALLOWED_UPDATES
            )
        log.info("telegram: %s as @%s", self.config.mode, self.app.bot.username)

    async def drain(self, timeout_s: float) -> bool:
        """Graceful shutdown: stop polling, answer the updates fetched so far within ``timeout_s``,
        give up on the rest (False). In webhook mode the web server refuses new updates (503), and
        Telegram sends them again later."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self.app.updater is not None and self.app.updater.running:
            # This confirms the updates fetched so far to Telegram: they are answered below.
            await self.app.updater.stop()
        answered = False
        try:  # the application's queue: updates fetched, being answered or waiting for a free slot
            await asyncio.wait_for(self.app.update_queue.join(), max(0.0, deadline - loop.time()))
            answered = True
        except TimeoutError:
            pass
        finally:
            if not answered:  # past the deadline, or told to stop waiting
                self._abandoned = True  # updates still queued are not begun
                await self.delivery.in_flight.cancel()
        # Then agents' replies and resends (given up too, past the deadline).
        if answered and await self.delivery.drain(deadline - loop.time()):
            return True
        log.warning("telegram: updates still being answered at shutdown were given up")
        return False

    async def stop(self) -> None:
        for action in list(self._background):
            action.cancel()
        if self.app.updater is not None and self.app.updater.running:
            await self.app.updater.stop()
        if self.app.running:
            await self.app.stop()
        await self.app.shutdown()

    def routes(self) -> list[BaseRoute]:  # PlatformChannel's type (lists are invariant)
        """The webhook endpoint, mounted on the shared web server (webhook mode only)."""
        if self.config.mode != "webhook":
            return []
        return [Route(self.config.webhook_path, self._webhook, methods=["POST"])]

    async def _webhook(self, request: Request) -> Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, str(self.config.webhook_secret).encode()):
            return Response("wrong secret token", status_code=403)
        try:
            data = json.loads(await request.body())
            if not isinstance(data, dict):  # PTB assumes an object; a bare number crashed it (fuzzing)
                raise TypeError("an update is a JSON object")
            update = Update.de_json(data, self.app.bot)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            return Response("not an update", status_code=400)
        # Acknowledge at once; the application's queue handles the update concurrently.
        await self.app.update_queue.put(update)
        return Response(status_code=200)

    # --- outgoing ---
    async def send(self, conversation_id: str, reply: Reply, pending: Pending | None = None) -> None:
        """Send proactively (an agent's reply) to the conversation's chat and topic.

        Raises ``UndeliverableError`` or ``DeliveryDeadlineError`` when it cannot arrive, so the
        handoff outbox can tell the agent.
        """
        dest = parse_conversation_id(conversation_id, PLATFORM)
        chat_id, thread_id = int(dest.chat_id), int(dest.thread_id) if dest.thread_id else None
        parts = functools.partial(self._parts, chat_id, thread_id)
        await self.delivery.proactive(str(chat_id), conversation_id, reply, parts, pending)

    def _parts(
        self, chat_id: int, thread_id: int | None, reply: Reply, reply_to: int | None = None
    ) -> list[Part]:
        chunks = split_rendered(reply.text, MessageLimit.MAX_TEXT_LENGTH, to_telegram_html)
        chunks = with_footer(chunks, sources_html(reply), MessageLimit.MAX_TEXT_LENGTH)
        markup = keyboard(reply)
        parts = []
        for index, chunk in enumerate(chunks):
            part_markup = markup if index == len(chunks) - 1 else None  # buttons under the last part
            send = functools.partial(
                self.app.bot.send_message,
                chat_id,
                chunk,
                parse_mode=ParseMode.HTML,
                message_thread_id=thread_id,
                reply_parameters=(
                    ReplyParameters(reply_to, allow_sending_without_reply=True)
                    if reply_to and index == 0
                    else None
                ),
                reply_markup=part_markup,
            )
            edit = functools.partial(self._edit, chat_id, text=chunk, reply_markup=part_markup)
            parts.append(Part(send, edit))
        return parts

    async def _edit(
        self, chat_id: int, message_id: int, text: str, reply_markup: InlineKeyboardMarkup | None = None
    ) -> None:
        try:
            await self.app.bot.edit_message_text(
                text, chat_id, message_id, parse_mode=ParseMode.HTML, reply_markup=reply_markup
            )
        except BadRequest as error:
            if not is_not_modified(error):
                raise

    def _streamed_message(
        self, chat_id: int, thread_id: int | None, reply_to: int | None
    ) -> StreamedMessage[int]:
        async def post(text: str) -> int:
            message = await self.app.bot.send_message(
                chat_id,
                text,
                parse_mode=ParseMode.HTML,
                message_thread_id=thread_id,
                reply_parameters=(
                    ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
                ),
            )
            return message.message_id

        async def edit(message_id: int, text: str) -> None:
            await self._edit(chat_id, message_id, text)

        delete = functools.partial(self.app.bot.delete_message, chat_id)
        interval_s = self.config.stream_interval_s
        if chat_id < 0:
            # Groups: PTB's limiter counts every call into the group against the per-minute budget,
            # edits too; edits any faster would only queue there and hold up the answer behind them.
            interval_s = max(interval_s, 60.0 / self.config.group_max_rate_per_min)
        return streamed_message(
            self.delivery,
            str(chat_id),
            post,
            edit,
            delete,
            interval_s=interval_s,
            limit=MessageLimit.MAX_TEXT_LENGTH,
            render=to_telegram_html,
        )

    async def _typing_while(self, chat_id: int, thread_id: int | None, work: Awaitable[Answer]) -> Answer:
        """Show "typing…" until the engine answers; Telegram clears it after 5 s, so repeat it.

        The chat action runs beside the engine, never before the answer: under load its round trip
        would otherwise delay every reply.
        """
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                action = asyncio.ensure_future(self._chat_action(chat_id, thread_id))
                self._background.add(action)  # keep a reference until it finishes
                action.add_done_callback(self._background.discard)
                await asyncio.wait({task}, timeout=self.config.typing_interval_s)
        except asyncio.CancelledError:
            task.cancel()  # the answer is given up (at shutdown): the engine's work with it
            raise
        return task.result()

    async def _chat_action(self, chat_id: int, thread_id: int | None) -> None:
        try:
            await self.app.bot.send_chat_action(chat_id, ChatAction.TYPING, message_thread_id=thread_id)
        except TelegramError as error:  # cosmetic: never fail the answer for it
            log.debug("telegram: chat action failed: %s", error)

    # --- incoming ---
    def _addressed_text(self, message: Message) -> str | None:
        """In a group: the text without the bot's @mention if the bot is addressed, else None.

        Addressed: an @mention, a reply to the bot, or a command (``/help`` or ``/help@thisbot``).
        """
        bot = self.app.bot
        username = f"@{bot.username}".lower()
        text = message.text or ""
        addressed = bool(
            message.reply_to_message
            and message.reply_to_message.from_user
            and message.reply_to_message.from_user.id == bot.id
        )
        for entity, value in message.parse_entities(
            [MessageEntity.MENTION, MessageEntity.TEXT_MENTION, MessageEntity.BOT_COMMAND]
        ).items():
            if entity.type == MessageEntity.MENTION and value.lower() == username:
                addressed = True
                text = text.replace(value, " ")
            elif entity.type == MessageEntity.TEXT_MENTION and entity.user and entity.user.id == bot.id:
                addressed = True
            elif entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
                # "/help" is for every bot in the group, "/help@otherbot" is not for us.
                target = value.partition("@")[2].lower()
                addressed = addressed or target in ("", username[1:])
        return " ".join(text.split()) if addressed else None

    async def _on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if self._abandoned or message is None or user is None or user.is_bot or message.text is None:
            return
        is_group = message.chat.type != ChatType.PRIVATE
        text = self._addressed_text(message) if is_group else message.text
        if text is None:
            return
        thread_id = message.message_thread_id if message.is_topic_message else None
        cid = conversation_id(PLATFORM, str(message.chat.id), _thread(thread_id), str(user.id), is_group)
        incoming = IncomingMessage(
            PLATFORM,
            cid,
            str(user.id),
            text,
            event_id=str(update.update_id),
            timestamp=message.date.timestamp(),
            user_name=user.first_name or "",
            user_handle=user.username or "",
        )
        chat_id, reply_to = message.chat.id, message.message_id if is_group else None
        streamed = self._streamed_message(chat_id, thread_id, reply_to) if self.config.stream else None
        await answer(
            self.delivery,
            self.on_new_message,
            incoming,
            str(chat_id),
            functools.partial(self._parts, chat_id, thread_id, reply_to=reply_to),
            streamed,
            while_waiting=functools.partial(self._typing_while, chat_id, thread_id),
        )

    async def _on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if self._abandoned or query is None:
            return
        try:
            await query.answer()  # stop the button's spinner at once
        except TelegramError as error:
            log.debug("telegram: answerCallbackQuery failed: %s", error)
        message = query.message
        if message is None or not query.data:
            return
        is_group = message.chat.type != ChatType.PRIVATE
        thread_id = (
            message.message_thread_id if isinstance(message, Message) and message.is_topic_message else None
        )
        user = query.from_user
        cid = conversation_id(PLATFORM, str(message.chat.id), _thread(thread_id), str(user.id), is_group)
        incoming = IncomingMessage(
            PLATFORM,
            cid,
            str(user.id),
            "",
            event_id=str(update.update_id),
            action=query.data,
            user_name=user.first_name or "",
        )
        # A button press never generates (actions are answered by the engine's rules): no streaming.
        await answer(
            self.delivery,
            self.on_new_message,
            incoming,
            str(message.chat.id),
            functools.partial(self._parts, message.chat.id, thread_id),
            while_waiting=functools.partial(self._typing_while, message.chat.id, thread_id),
        )

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        # A handler bug must not stop the bot; PTB passes errors here instead of raising.
        log.error("telegram: error while handling an update", exc_info=context.error)
