"""The web app every deployment runs: the chat page and widget (``app``, ``widget``), the agent
console (``agent_console``), the admin dashboard (``admin``) and the login they share (``login``,
``sessions``). Pages and scripts are in ``static/``."""

from bots.web.app import create_web_app

__all__ = ["create_web_app"]
