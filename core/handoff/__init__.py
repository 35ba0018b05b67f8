"""Handoff: when the bot should not answer, and the people who answer instead.

``policy`` decides from a message and the reply candidates whether to escalate and why;
``escalator`` applies it to live conversations; ``service`` is the per-conversation state machine
(bot → queued → agent → bot) and the agents' queue, atomic through the Lua scripts in ``lua``;
``agents`` holds the agents' accounts, teams and presence; ``stats`` the handoff figures.
"""

from core.handoff.agents import Agent, AgentDirectory, check_password, hash_password
from core.handoff.escalator import Escalator
from core.handoff.policy import Escalation, EscalationPolicy, Reason
from core.handoff.service import HandoffError, HandoffService, QueueEntry
from core.handoff.stats import HandoffFigures, figures_since, start_of_today

__all__ = [
    "Agent",
    "AgentDirectory",
    "Escalation",
    "EscalationPolicy",
    "Escalator",
    "HandoffError",
    "HandoffFigures",
    "HandoffService",
    "QueueEntry",
    "Reason",
    "check_password",
    "figures_since",
    "hash_password",
    "start_of_today",
]
