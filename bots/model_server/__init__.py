"""``chatbot model-server``: this project's model behind an OpenAI-compatible API.

Bot replicas run with ``MODEL_BACKEND=openai`` and share one model process (or a GPU box), the
same way they would use vLLM; any OpenAI client (the official SDKs, LangChain, curl) works too.

- ``POST /v1/chat/completions``: ``messages``, ``n``, ``max_tokens`` / ``max_completion_tokens``,
  ``temperature``, ``top_p``, ``seed``, ``stop``, ``logprobs``, ``stream`` (with
  ``stream_options.include_usage``), and ``usage`` in every answer. A client's system messages
  replace the team's system prompt (SYSTEM_PROMPT) for that request.
- ``POST /v1/completions``: legacy text completions; the prompt (a string or a list) is continued
  as raw text, without the chat template.
- ``GET /v1/models`` and ``GET /v1/models/{id}``: the served version, naming its base.

``n`` is 1 unless asked, as OpenAI's; anything else a request leaves unset decodes as configured
(DecodingConfig, from the settings). One model is
served: ``model`` in a request is not checked (the answer's ``model`` says which version answered),
so bots need not follow version names. Errors come in OpenAI's shape (``errors.py``).
"""

from bots.model_server.app import create_model_server

__all__ = ["create_model_server"]
