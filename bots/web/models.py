"""The admin dashboard's model registry: every version (whole weights or a LoRA adapter over a
base), which one ``current`` names and which one this process serves, each with its evaluation
summary, gate decision and base; and a rollback to the version the last promotion replaced.

Reads and moves the pointer through ``core.model.versions``, the functions ``chatbot train
rollback`` uses, so the web app never imports the training stack (torch).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bots.web.login import WebLogin
from core.model import versions as registry_files
from core.model.bases import BASE_CARD, BaseRef, adapter_problem, is_adapter

log = logging.getLogger(__name__)

HISTORY_SHOWN = 20


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _eval_summary(ev: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of ``eval.json`` (None where a version's evaluation lacks one)."""
    lm = ev.get("language_model", {}).get("model", {})
    replies = ev.get("replies", {}).get("model", {})
    knowledge = ev.get("knowledge", {})
    return {
        # answering from the knowledge base (`chatbot kb eval --write-eval`)
        "kb_fact": knowledge.get("fact"),
        "kb_declines_unanswerable": knowledge.get("declines_unanswerable"),
        "kb_invented": knowledge.get("invented"),
        "bits_per_byte": lm.get("bits_per_byte"),
        "ppl": lm.get("ppl"),
        "f1": replies.get("f1"),
        "bleu": replies.get("bleu"),
        "semantic_similarity": replies.get("semantic_similarity"),
        "test_conversations": ev.get("test_conversations"),
    }


def _gate_summary(gate: dict[str, Any]) -> dict[str, Any] | None:
    """What the promotion gate decided (``gate.json``, written by ``chatbot train retrain``)."""
    if not gate:
        return None
    against = gate.get("current")
    return {
        "decision": gate.get("decision"),
        "reason": gate.get("reason", ""),
        "against": Path(against).name if against else None,
        "checks": gate.get("checks", {}),
    }


def _base(version_dir: Path) -> tuple[dict[str, str] | None, str | None]:
    """An adapter's base (name, package, sha256, ...) and what stops serving it here, if anything."""
    if not is_adapter(version_dir):
        return None, None
    try:
        ref = BaseRef.read(version_dir / BASE_CARD)
    except (OSError, ValueError, TypeError) as error:
        return None, f"unreadable {BASE_CARD}: {error}"
    base = {"name": ref.name, "package": ref.package, "version": ref.version, "sha256": ref.sha256,
            "file": ref.file}  # fmt: skip
    return base, adapter_problem(version_dir)


def describe(version_dir: Path, current: str | None, serving: str | None) -> dict[str, Any]:
    base, problem = _base(version_dir)
    return {
        "version": version_dir.name,
        "current": version_dir.name == current,
        "serving": version_dir.name == serving,
        "kind": "adapter" if is_adapter(version_dir) else "full",
        "base": base,
        "base_problem": problem,
        "created": _read_json(version_dir / "source.json").get("created"),
        **_eval_summary(_read_json(version_dir / "eval.json")),
        "gate": _gate_summary(_read_json(version_dir / "gate.json")),
    }


def registry(models_path: str | Path, serving: str | None = None) -> dict[str, Any]:
    """Versions under a registry directory with their metrics, gate decision and base, the version
    ``current`` names, the one a rollback would return to, and the latest promotions and rollbacks.
    A ``MODEL_PATH`` that is one model directory, not a registry, lists nothing."""
    root = Path(models_path)
    names = registry_files.versions(root)
    current = registry_files.current(root) if names else None
    return {
        "current": current,
        "serving": serving,
        "rollback_to": registry_files.rollback_target(root) if names else None,
        "versions": [describe(root / name, current, serving) for name in names],
        "history": registry_files.history(root)[-HISTORY_SHOWN:] if names else [],
    }


class ModelsApi:
    """``GET {area}/api/models`` and ``POST {area}/api/models/rollback``, behind ``auth``."""

    def __init__(
        self, models_path: str | Path, auth: WebLogin, serving: Callable[[], str] | None = None
    ) -> None:
        self.models_path = Path(models_path)
        self.auth = auth
        #: the version this process serves now (it follows the pointer after a poll); None: unknown
        self.serving = serving

    def routes(self) -> list[BaseRoute]:
        area = self.auth.area
        return [
            Route(f"{area}/api/models", self.list),
            Route(f"{area}/api/models/rollback", self.rollback, methods=["POST"]),
        ]

    async def list(self, request: Request) -> Response:
        await self.auth.require(request)
        return JSONResponse(registry(self.models_path, self.serving() if self.serving else None))

    async def rollback(self, request: Request) -> Response:
        """``{"current": VERSION}``: the version the admin saw as current, so that a second click, or
        a promotion since the page loaded, does not roll back further than they meant."""
        session, body = await self.auth.require_action(request, "current")
        now = registry_files.current(self.models_path)
        if body["current"] != now:
            return JSONResponse(
                {"error": f"{now or 'nothing'} is current now, not {body['current']}; reload the page."},
                status_code=409,
            )
        try:
            restored = registry_files.rollback(self.models_path, by=session.username)
        except RuntimeError as error:
            return JSONResponse({"error": str(error)}, status_code=409)
        log.info("%s rolled the model back from %s to %s", session.username, now, restored)
        return JSONResponse({"ok": True, "current": restored, "previous": now})
