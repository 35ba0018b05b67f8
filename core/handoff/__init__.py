"""Handoff: when the bot should not answer, and the people who answer instead.

``policy`` decides from a message and the reply candidates whether to escalate and why;
``escalator`` applies it to live conversations; ``service`` is the per-conversation state machine
(bot → queued → agent → bot) and the agents' queue, atomic through the Lua scripts in ``lua``;
``agents`` holds the agents' accounts, teams and presence; ``stats`` the handoff figures. The agents'
inbox: ``canned`` responses, private ``notes``, ``csat`` ratings after a resolve, and business
``hours`` per team.
"""

from core.handoff.agents import Agent, AgentDirectory, check_password, hash_password
from core.handoff.canned import CannedResponse, CannedResponses, expand
from core.handoff.csat import CSAT_ACTION, CsatSurvey, Rated, Satisfaction, Survey
from core.handoff.escalator import Escalator
from core.handoff.hours import BusinessHours, Schedule, describe_opening
from core.handoff.notes import ConversationNotes, Note
from core.handoff.policy import Escalation, EscalationPolicy, Reason
from core.handoff.service import HandoffError, HandoffService, QueueEntry
from core.handoff.stats import HandoffFigures, figures_since, start_of_today

__all__ = [
    "CSAT_ACTION",
    "Agent",
    "AgentDirectory",
    "BusinessHours",
    "CannedResponse",
    "CannedResponses",
    "ConversationNotes",
    "CsatSurvey",
    "Escalation",
    "EscalationPolicy",
    "Escalator",
    "HandoffError",
    "HandoffFigures",
    "HandoffService",
    "Note",
    "QueueEntry",
    "Rated",
    "Reason",
    "Satisfaction",
    "Schedule",
    "Survey",
    "check_password",
    "describe_opening",
    "expand",
    "figures_since",
    "hash_password",
    "start_of_today",
]
