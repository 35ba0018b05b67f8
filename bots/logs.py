"""Process-wide logging: plain or one JSON object per line, each with conversation and request ids.

No message text or personal data is logged at INFO (the engine logs ids and counts only).
"""

from __future__ import annotations

import json
import logging
import sys

from core.monitoring.log_context import ContextFilter


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "conversation_id": getattr(record, "conversation_id", "-"),
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "INFO", as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    plain = "%(asctime)s %(levelname)s %(name)s [%(conversation_id)s %(request_id)s]: %(message)s"
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter(plain))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Library chatter (HTTP requests per message, weight-loading bars) is not ours to show at INFO.
    for noisy in ("httpx", "transformers", "urllib3", "pywa"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
