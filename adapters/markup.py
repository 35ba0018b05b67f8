"""The engine's light markdown, rendered for each platform with what must be escaped escaped.

The engine (model, agents, canned texts) may write ```code blocks```, `code`, **bold**, *italic*
or _italic_, and [label](https://link). Everything else is plain text, and plain text must never
turn into formatting or markup on a platform: a stray ``<`` must not open an HTML tag in
Telegram, ``<!channel>`` must not ping a Slack channel, ``@everyone`` must not ping a Discord guild.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import discord.utils

Kind = Literal["text", "pre", "code", "bold", "italic", "link"]


@dataclass(frozen=True, slots=True)
class Span:
    kind: Kind
    text: str
    url: str = ""


_TOKEN = re.compile(
    r"```(?:[A-Za-z0-9_+-]*\n)?(?P<pre>.*?)```"
    r"|`(?P<code>[^`\n]+)`"
    r"|\[(?P<label>[^\]\n]+)\]\((?P<url>https?://[^)\s]+)\)"
    r"|\*\*(?P<bold>\S(?:.*?\S)?)\*\*"
    r"|(?<![\w*])\*(?P<italic>[^*\s](?:[^*]*?[^*\s])?)\*(?![\w*])"
    r"|(?<!\w)_(?P<italic2>[^_\s](?:[^_]*?[^_\s])?)_(?!\w)",
    re.DOTALL,
)


def parse(text: str) -> Iterator[Span]:
    """Split light markdown into spans; unmatched markers stay in plain text."""
    pos = 0
    for match in _TOKEN.finditer(text):
        if match.start() > pos:
            yield Span("text", text[pos : match.start()])
        groups = match.groupdict()
        if groups["pre"] is not None:
            yield Span("pre", groups["pre"])
        elif groups["code"] is not None:
            yield Span("code", groups["code"])
        elif groups["label"] is not None:
            yield Span("link", groups["label"], groups["url"])
        elif groups["bold"] is not None:
            yield Span("bold", groups["bold"])
        else:
            yield Span("italic", groups["italic"] if groups["italic"] is not None else groups["italic2"])
        pos = match.end()
    if pos < len(text):
        yield Span("text", text[pos:])


def to_telegram_html(text: str) -> str:
    """Telegram ``parse_mode=HTML``: only ``<``, ``>``, ``&`` (and quotes in attributes) need escaping."""
    out: list[str] = []
    for span in parse(text):
        body = html.escape(span.text, quote=False)
        match span.kind:
            case "pre":
                out.append(f"<pre>{body}</pre>")
            case "code":
                out.append(f"<code>{body}</code>")
            case "bold":
                out.append(f"<b>{body}</b>")
            case "italic":
                out.append(f"<i>{body}</i>")
            case "link":
                out.append(f'<a href="{html.escape(span.url, quote=True)}">{body}</a>')
            case _:
                out.append(body)
    return "".join(out)


def slack_escape(text: str) -> str:
    # Slack's rule: escape exactly these three; that also defuses <!channel> and <@U123> pings.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_slack_mrkdwn(text: str) -> str:
    """Slack ``mrkdwn``: *bold*, _italic_, `code`, ```pre```, <url|label>."""
    out: list[str] = []
    for span in parse(text):
        body = slack_escape(span.text)
        match span.kind:
            case "pre":
                out.append(f"```{body}```")
            case "code":
                out.append(f"`{body}`")
            case "bold":
                out.append(f"*{body}*")
            case "italic":
                out.append(f"_{body}_")
            case "link":
                out.append(f"<{slack_escape(span.url).replace('|', '%7C')}|{body.replace('|', '¦')}>")
            case _:
                out.append(body)
    return "".join(out)


def discord_plain(text: str) -> str:
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def to_discord_markdown(text: str) -> str:
    """Discord markdown; plain text has markdown and mentions escaped (pings are also disabled on send)."""
    out: list[str] = []
    for span in parse(text):
        match span.kind:
            case "pre":
                # A zero-width space keeps a fence inside the block from closing it early.
                body = span.text.replace("```", "`\u200b``")
                out.append(f"```\n{body}```")
            case "code":
                out.append(f"`{span.text}`")
            case "bold":
                out.append(f"**{discord_plain(span.text)}**")
            case "italic":
                out.append(f"*{discord_plain(span.text)}*")
            case "link":
                out.append(f"[{discord_plain(span.text)}](<{span.url}>)")
            case _:
                out.append(discord_plain(span.text))
    return "".join(out)
