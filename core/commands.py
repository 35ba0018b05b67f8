"""The built-in commands, declared once.

The engine answers ``/name`` for each of them (``DialogueEngine._run_command``), ``/help`` lists
them (``help_text``), and the platform adapters advertise them in their command menus: Telegram's
``setMyCommands``, Discord's slash commands, Slack's slash command handler. A new command is one
member here plus its handler in the engine; the type checker reports a member with no handler.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Command", "help_text", "menu"]


class Command(StrEnum):
    """A built-in command. Its value is the name users type after ``/``."""

    _value_: str
    #: what command menus show next to the name (Telegram and Discord allow 100 characters)
    description: str
    #: its line in ``/help``; None: not listed there
    help_line: str | None

    def __new__(cls, name: str, description: str, help_line: str | None = "") -> Command:
        member = str.__new__(cls, name)
        member._value_ = name
        member.description = description
        # By default /help says what the menu says, in the middle of a sentence.
        member.help_line = description[:1].lower() + description[1:] if help_line == "" else help_line
        return member

    # Not in /help: whoever reads the help has started already.
    START = "start", "Start a conversation", None
    HELP = "help", "What this bot can do", "this message"
    RESET = "reset", "Start our conversation over"
    FORGET = "forget", "Erase everything stored about you"
    HUMAN = "human", "Ask for a person"

    @classmethod
    def named(cls, name: str) -> Command | None:
        """The command called ``name`` (already lower-cased, without ``/`` or ``@bot``), if any."""
        return next((command for command in cls if command.value == name), None)


def menu() -> dict[str, str]:
    """Name → description of every command, in declaration order: what platforms' menus list."""
    return {command.value: command.description for command in Command}


def help_text(intro: str) -> str:
    """``intro``, then one ``/name – what it does`` line per command listed in /help."""
    lines = [f"/{command.value} – {command.help_line}" for command in Command if command.help_line]
    return "\n".join([intro, *lines])
