"""What the engine itself says to users (everything else comes from the model or an agent)."""

from core.commands import help_text
from core.monitoring.language import guess_language

DISCLOSURE = (
    "Hi, I'm {bot_name}, an automated assistant (a computer program, not a person). "
    "Type /human or press “Talk to a human” at any time to reach a person."
)
#: the command lines come from the command registry, so /help lists exactly what the engine answers
HELP = help_text("Just write to me and I'll answer. Commands:")
RESET = "Okay, let's start over. What's on your mind?"
FORGOTTEN = "Done: I've erased everything I had stored about you."
HUMAN_REQUESTED = "I've asked for a person to join. Your messages are kept for them, and they'll answer here."
EMPTY = "I didn't get any text there. Please type a message."
TOO_LONG = "That message is too long ({length} characters). Please keep it under {limit} characters."
UNKNOWN_COMMAND = "I don't know the command {command}. Type /help to see what I understand."
UNKNOWN_ACTION = "That button doesn't work any more. Type /help to see what I understand."
#: the knowledge step's decline, by the language the user wrote in (``guess_language``); it names
#: what was not found (the user's question) and offers a person
KB_DECLINE = {
    "en": "I couldn't find an answer to “{question}” in our documents, and I'd rather not guess. "
    "Press “Talk to a human” or type /human and a person from the team will answer.",
    "de": "Zu „{question}“ habe ich in unseren Unterlagen keine Antwort gefunden, und raten möchte ich "
    "nicht. Tippe auf „Talk to a human“ oder schreibe /human, dann antwortet dir jemand aus dem Team.",
    "fr": "Je n'ai pas trouvé de réponse à « {question} » dans nos documents, et je préfère ne pas "
    "deviner. Appuyez sur « Talk to a human » ou tapez /human : une personne de l'équipe vous répondra.",
    "es": "No encontré una respuesta a «{question}» en nuestros documentos y prefiero no adivinar. "
    "Pulsa «Talk to a human» o escribe /human y una persona del equipo te responderá.",
    "pt": "Não encontrei uma resposta para “{question}” nos nossos documentos e prefiro não adivinhar. "
    "Toque em “Talk to a human” ou escreva /human e uma pessoa da equipe vai responder.",
}
#: the longest question quoted in a decline
KB_DECLINE_QUOTE_CHARS = 90
NO_GOOD_ANSWER = "Sorry, I don't have a good answer to that. Type /human to talk to a person."
APOLOGY = "Sorry, something went wrong on my side. Please try again in a moment."
TALK_TO_HUMAN = "Talk to a human"
QUEUED = "I've asked for a person to join; you're number {position} in line. Your messages are kept for them."
AGENT_JOINED = "{name} from our team has joined the conversation."
BOT_BACK = "The person has left the conversation; I'm back (the automated assistant). How can I help?"
NO_AGENT_IN_TIME = (
    "Sorry, no one is free right now. You can leave a message for the team, or continue with me."
)
LEAVE_MESSAGE = "Leave a message"
BACK_TO_BOT = "Continue with the bot"
MESSAGE_KEPT = "Okay. Write your message here; the team will read it and answer as soon as they can."
FEEDBACK_THANKS = "Thanks for the feedback!"
#: the model had no time for a message (``core/admission.py``, a timeout, a full queue), by the user's
#: language: the message is kept and answered later (``DialogueEngine.follow_up``)
BUSY = {
    "en": "I'm answering a lot of people right now and couldn't reply in time. I've kept your message "
    "and will answer it here as soon as I can.",
    "de": "Ich beantworte gerade sehr viele Nachrichten und konnte nicht rechtzeitig antworten. Deine "
    "Nachricht ist gespeichert, und ich antworte dir hier, sobald ich kann.",
    "fr": "Je réponds à beaucoup de personnes en ce moment et n'ai pas pu répondre à temps. J'ai gardé "
    "votre message et j'y répondrai ici dès que possible.",
    "es": "Ahora mismo estoy respondiendo a mucha gente y no pude contestar a tiempo. He guardado tu "
    "mensaje y te responderé aquí en cuanto pueda.",
    "pt": "Estou respondendo muitas pessoas agora e não consegui responder a tempo. Guardei sua mensagem "
    "e vou responder aqui assim que puder.",
}
RATE_LIMITED = "You're sending messages faster than I can read them. Please wait a minute and try again."
UNSAFE_INPUT = "I can't help with that. If someone is in danger, please contact your local emergency number."
UNAVAILABLE = "I'm temporarily unavailable. Please try again in a minute."
UNAVAILABLE_KEPT = "I'm temporarily unavailable, but I've kept your message and will answer as soon as I can."
# Canned responses' variables when the value is unknown (the platform gave no name; no team).
CANNED_USER_FALLBACK = "there"
CANNED_AGENT_FALLBACK = "our team"
CANNED_TEAM_FALLBACK = "support"
CSAT_QUESTION = (
    "{name} has closed this conversation. How did we do? "
    "Please rate the help you got, from 1 (poor) to 5 (excellent)."
)
CSAT_THANKS = "Thank you for rating us!"
CSAT_ALREADY = "Thanks, we already have your rating for that conversation."
CSAT_CLOSED = "Thanks! That rating has closed, but you're welcome to tell me how we can help."
AFTER_HOURS = (
    "Our team is away right now; they're back {when}. You can leave a message and they'll answer "
    "it first thing, or continue with me."
)


def shorten(text: str, max_chars: int) -> str:
    """``text`` if it fits ``max_chars``, else cut at the last whole word that fits, with "…"."""
    return text if len(text) <= max_chars else text[: max_chars - 1].rsplit(" ", 1)[0] + "…"


def decline(question: str) -> str:
    """The knowledge step's decline in the user's language (English when unsure), quoting what was
    asked so the user sees what the bot could not find."""
    quoted = shorten(" ".join(question.split()), KB_DECLINE_QUOTE_CHARS)
    template = KB_DECLINE.get(guess_language(question), KB_DECLINE["en"])
    return template.format(question=quoted.rstrip("?？ "))


#: small talk whose every generated reply invented a fact about the bot (a name, an age, a home town)
ABOUT_ME = {
    "en": "I'm {bot_name}, an automated assistant, so I have no age, home or life story of my own to "
    "tell. What can I help you with?",
    "de": "Ich bin {bot_name}, ein automatischer Assistent, und habe kein Alter, kein Zuhause und keine "
    "eigene Lebensgeschichte. Wobei kann ich helfen?",
    "fr": "Je suis {bot_name}, un assistant automatique : je n'ai ni âge, ni domicile, ni histoire "
    "personnelle à raconter. En quoi puis-je vous aider ?",
    "es": "Soy {bot_name}, un asistente automático, así que no tengo edad, casa ni historia propia que "
    "contar. ¿En qué puedo ayudarte?",
    "pt": "Sou {bot_name}, um assistente automático, então não tenho idade, casa nem história própria "
    "para contar. Como posso ajudar?",
}


def about_me(text: str, bot_name: str) -> str:
    """The bot's honest word about itself, in the language of the message it answers."""
    return ABOUT_ME.get(guess_language(text), ABOUT_ME["en"]).format(bot_name=bot_name)


def busy(text: str) -> str:
    """The busy reply in the language of the message it answers (English when unsure)."""
    return BUSY.get(guess_language(text), BUSY["en"])
