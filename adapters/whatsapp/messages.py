"""A reply as WhatsApp messages: the engine's light markdown in WhatsApp's formatting, long text
split, quick-reply buttons as interactive reply buttons or, when they do not fit, a list.

WhatsApp's limits (Cloud API, interactive messages): a text body holds 4096 characters, the body of a
reply-buttons message 1024 and of a list message 4096; at most 3 reply buttons with titles of up to
20 characters (unique) and ids of up to 256; a list opens from a button of up to 20 characters and
holds at most 10 rows, with titles of up to 24 characters, descriptions of up to 72 and ids of up to
200. Buttons go under the last message of a reply, as on the other platforms.

WhatsApp has no escape character: ``*``, ``_``, ``~`` and backticks in plain text stay as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pywa_async.types import Button as ReplyButton
from pywa_async.types import Section, SectionList, SectionRow

from adapters.markup import parse
from adapters.outbound import split_rendered, split_text
from adapters.sources import SourceRef, footer, reply_sources, with_footer
from core.types import Button, Reply

log = logging.getLogger(__name__)

TEXT_LIMIT = 4096
BUTTONS_BODY_LIMIT = 1024
LIST_BODY_LIMIT = 4096
MAX_REPLY_BUTTONS = 3
BUTTON_TITLE_LIMIT = 20
BUTTON_ID_LIMIT = 256
LIST_BUTTON_LIMIT = 20
MAX_LIST_ROWS = 10
ROW_TITLE_LIMIT = 24
ROW_DESCRIPTION_LIMIT = 72
ROW_ID_LIMIT = 200

Keyboard = list[ReplyButton] | SectionList


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One WhatsApp message of a reply: its text and, on the last one, its buttons."""

    text: str
    keyboard: Keyboard | None = None


def to_whatsapp(text: str) -> str:
    """WhatsApp formatting: *bold*, _italic_, `code`, ```pre```; a link becomes "label (url)"."""
    out: list[str] = []
    for span in parse(text):
        match span.kind:
            case "pre":
                out.append(f"```{span.text}```")
            case "code":
                out.append(f"`{span.text}`")
            case "bold":
                out.append(f"*{span.text}*")
            case "italic":
                out.append(f"_{span.text}_")
            case "link":
                out.append(span.url if span.text == span.url else f"{span.text} ({span.url})")
            case _:
                out.append(span.text)
    return "".join(out)


def _shorten(label: str, limit: int) -> str:
    return label if len(label) <= limit else label[: limit - 1].rstrip() + "…"


def _usable(buttons: Sequence[Button], id_limit: int) -> list[Button]:
    usable = []
    for button in buttons:
        if not button.label.strip() or not button.action:
            continue
        if len(button.action) > id_limit:
            log.warning("whatsapp: button %r dropped: its action is too long for an id", button.label)
            continue
        usable.append(button)
    return usable


def keyboard(buttons: Sequence[Button], list_button: str) -> Keyboard | None:
    """Reply buttons when they fit (at most 3, every label whole within 20 characters, no two
    alike); otherwise a list that opens from ``list_button``, so that no label is cut short where a
    list can show it whole."""
    as_buttons = _usable(buttons, BUTTON_ID_LIMIT)
    labels = [b.label for b in as_buttons]
    if (
        as_buttons
        and len(as_buttons) <= MAX_REPLY_BUTTONS
        and all(len(label) <= BUTTON_TITLE_LIMIT for label in labels)
        and len(set(labels)) == len(labels)
    ):
        return [ReplyButton(b.label, b.action) for b in as_buttons]
    rows = _usable(buttons, ROW_ID_LIMIT)
    if not rows:
        return None
    if len(rows) > MAX_LIST_ROWS:
        log.warning("whatsapp: %d buttons, a list shows %d; the rest dropped", len(rows), MAX_LIST_ROWS)
        rows = rows[:MAX_LIST_ROWS]
    title = _shorten(list_button, LIST_BUTTON_LIMIT)
    section_rows = [
        SectionRow(
            _shorten(b.label, ROW_TITLE_LIMIT),
            b.action,
            # a cut title is shown whole underneath
            _shorten(b.label, ROW_DESCRIPTION_LIMIT) if len(b.label) > ROW_TITLE_LIMIT else None,
        )
        for b in rows
    ]
    return SectionList(title, [Section(_shorten(list_button, ROW_TITLE_LIMIT), section_rows)])


def source_text(ref: SourceRef) -> str:
    return f"{ref.label} ({ref.url})" if ref.url else ref.label


def sources_text(reply: Reply) -> str:
    """A plain "Source: …" line (or lines) under the answer; WhatsApp links bare URLs itself."""
    return footer(reply_sources(reply), source_text)


def render(reply: Reply, list_button: str) -> list[Outgoing]:
    """The messages a reply is sent as, in order; the buttons (and sources) ride on the last one."""
    chunks = with_footer(split_rendered(reply.text, TEXT_LIMIT, to_whatsapp), sources_text(reply), TEXT_LIMIT)
    board = keyboard(reply.buttons, list_button)
    if board is None or not chunks:
        return [Outgoing(chunk) for chunk in chunks]
    # An interactive message's body is shorter than a text message's: the last chunk may need cutting.
    limit = BUTTONS_BODY_LIMIT if isinstance(board, list) else LIST_BODY_LIMIT
    *head, last = chunks
    tail = split_text(last, limit)
    return [*(Outgoing(chunk) for chunk in head + tail[:-1]), Outgoing(tail[-1], board)]
