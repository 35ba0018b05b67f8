"""Training throughput and model FLOPs utilisation (MFU) on this machine, against a library baseline.

    .venv/bin/python benchmarks/train_throughput.py                    # both scenarios
    .venv/bin/python benchmarks/train_throughput.py --scenario pretrain --steps 20 --json out.json
    .venv/bin/python benchmarks/train_throughput.py --scenario lora     # needs `chatbot train base`, trl

Scenarios, each measured in one run against its baseline on the same model, data, sequence length,
dtype and threads:

* ``pretrain``: the ``small`` preset from scratch, our loop vs ``transformers.Trainer`` (its default
  fused AdamW, as ours).
* ``lora``: the default model's fine-tune, LoRA r=16 on every linear layer of SmolLM2-135M, on real
  chitchat windows with the loss on assistant tokens only; our loop (packed rows that keep
  conversations apart, logits only where the loss is taken, only adapter parameters in the
  optimizer) vs TRL's ``SFTTrainer`` with the same peft LoRA and the same examples, padded per batch
  (its default), with the same real tokens per step.

Only real (non-padding) tokens are counted. MFU = FLOPs per token x tokens/s / peak, with 6N FLOPs
per token for full training and 4N + 6N_adapter for LoRA (frozen weights need no weight gradients).

The peak is the highest of several short matmul measurements (square and model-shaped, in the
training dtype), taken before and after every timed run, because a shared machine's rate swings from
one second to the next; the spread is reported. An MFU above 100 % means the peak was measured low:
the run is reported as a failed measurement (exit status 1), never as a result.
Steady-state rates: the first ``--warmup`` steps of each run are not timed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see training/cli.py)

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import torch  # noqa: E402
from transformers import LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from training.model.loop import TrainArgs, cpu_bf16_ok, train  # noqa: E402
from training.model.presets import get_preset, model_config  # noqa: E402


@dataclass
class PeakMeter:
    """Matmul FLOP/s in one dtype, sampled repeatedly; the ceiling is the highest sample."""

    dtype: torch.dtype
    shapes: list[tuple[int, int, int]]
    seconds: float = 1.0
    samples: list[float] = field(default_factory=list)

    def sample(self) -> None:
        for m, k, n in self.shapes:
            a, b = torch.randn(m, k).to(self.dtype), torch.randn(k, n).to(self.dtype)
            a @ b  # warm up kernels
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < self.seconds:
                a @ b
                reps += 1
            self.samples.append(2 * m * k * n * reps / (time.perf_counter() - t0))

    @property
    def peak(self) -> float:
        return max(self.samples)

    def spread(self) -> str:
        lo, hi = min(self.samples), max(self.samples)
        return f"{lo / 1e9:.0f}-{hi / 1e9:.0f} GFLOP/s over {len(self.samples)} samples"


def steady_rate(times: list[float], tokens: list[int], warmup: int) -> float:
    """Tokens per second over the steps after ``warmup`` (``times[i]`` is when step i ended)."""
    return sum(tokens[warmup:]) / (times[-1] - times[warmup - 1])


class StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def trainer_args(tmp: str, steps: int, batch: int, dtype: str, lr: float) -> dict:
    return dict(
        output_dir=tmp,
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=lr,
        warmup_steps=2,
        lr_scheduler_type="cosine",
        bf16=dtype == "bf16",
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        dataloader_num_workers=0,
        max_grad_norm=1.0,
        disable_tqdm=True,
    )


def our_loop(model, rows, steps: int, batch: int, dtype: str, threads: int, lr: float) -> list[float]:
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainArgs(
            out_dir=tmp,
            max_steps=steps,
            batch_size=batch,
            dtype=dtype,
            eval_every=0,
            ckpt_every=0,
            threads=threads,
            warmup_steps=2,
            lr=lr,
        )
        train(
            model,
            rows,
            tuple(t[:batch] if t is not None else None for t in rows),
            args,
            on_step=lambda s, st: times.append(time.perf_counter()),
        )
    return times


# --- pretrain: the small preset from scratch ---


def pretrain_scenario(a: argparse.Namespace, meter: PeakMeter) -> dict:
    p = get_preset(a.preset)

    def make() -> LlamaForCausalLM:
        torch.manual_seed(0)
        return LlamaForCausalLM(model_config(a.preset, p.vocab_size, 1, 2, 0))

    x = torch.randint(
        7, p.vocab_size, (a.batch * (a.steps + 1), p.context), generator=torch.Generator().manual_seed(0)
    )
    n_params = sum(t.numel() for t in make().parameters())
    per_step = [a.batch * p.context] * a.steps
    meter.sample()
    ours = steady_rate(
        our_loop(make(), (x, x), a.steps, a.batch, a.dtype, a.threads, 1e-3), per_step, a.warmup
    )
    meter.sample()
    torch.set_num_threads(a.threads)
    timer = StepTimer()
    data = [{"input_ids": row, "labels": row} for row in x]
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(**trainer_args(tmp, a.steps, a.batch, a.dtype, 1e-3), weight_decay=0.1)
        Trainer(model=make(), args=args, train_dataset=data, callbacks=[timer]).train()
    base = steady_rate(timer.times, per_step, a.warmup)
    meter.sample()
    flops = 6 * n_params
    return {
        "scenario": "pretrain",
        "model": f"{a.preset} preset",
        "params": n_params,
        "flops_per_token": flops,
        "ours_tokens_per_s": ours,
        "baseline": "transformers.Trainer",
        "baseline_tokens_per_s": base,
    }


# --- lora: the default model's fine-tune ---


def lora_scenario(a: argparse.Namespace, meter: PeakMeter) -> dict:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from core.model.bases import find_base
    from training.data.sources import ChitchatSource
    from training.model.chat_formats import TemplateFormat, engine_system_prompt
    from training.model.encoding import pack

    base = find_base(a.base)
    tok = AutoTokenizer.from_pretrained(base)
    fmt = TemplateFormat(tok, engine_system_prompt())
    convs = [c for c, _ in zip(ChitchatSource().read(), range(400), strict=False) if c.is_dialogue]
    examples = [w for c in convs for w in fmt.windows(c, a.context, {"assistant"})]
    filler = int(tok.unk_token_id)  # never in a rendered chat, so padding is countable
    rows = pack(examples, a.context, filler)
    rows_needed = a.batch * (a.steps + 1)
    real_per_row = (rows.x[:rows_needed] != filler).sum(1).tolist()
    # The examples those rows hold, in the same order, for TRL (one padded example per row of its batch).
    per_row = len(examples) / len(rows.x)
    trl_batch = max(1, round(a.batch * per_row))
    trl_examples = examples[: trl_batch * (a.steps + 1)]
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )

    def make():
        torch.manual_seed(0)
        return get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), lora)

    model = make()
    n_params = sum(t.numel() for t in model.parameters() if not t.requires_grad)
    n_adapter = sum(t.numel() for t in model.parameters() if t.requires_grad)
    del model
    sub = tuple(t[:rows_needed] for t in rows)
    meter.sample()
    times = our_loop(make(), sub, a.steps, a.batch, a.dtype, a.threads, 2e-4)
    tokens = [sum(real_per_row[s * a.batch : (s + 1) * a.batch]) for s in range(a.steps)]
    ours = steady_rate(times, tokens, a.warmup)
    meter.sample()
    torch.set_num_threads(a.threads)
    labels = [[t if m else -100 for t, m in zip(ids, mask, strict=True)] for ids, mask in trl_examples]
    data = Dataset.from_dict({"input_ids": [ids for ids, _ in trl_examples], "labels": labels})
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SFTConfig(
            **trainer_args(tmp, a.steps, trl_batch, a.dtype, 2e-4),
            max_length=a.context,
            packing=False,
            weight_decay=0.0,
        )
        SFTTrainer(
            model=make(), args=cfg, train_dataset=data, processing_class=tok, callbacks=[timer]
        ).train()
    trl_tokens = [
        sum(len(ids) for ids, _ in trl_examples[s * trl_batch : (s + 1) * trl_batch]) for s in range(a.steps)
    ]
    base_tps = steady_rate(timer.times, trl_tokens, a.warmup)
    meter.sample()
    return {
        "scenario": "lora",
        "model": f"{base.name} + LoRA r=16",
        "params": n_params,
        "adapter_params": n_adapter,
        "flops_per_token": 4 * n_params + 6 * n_adapter,
        "ours_tokens_per_s": ours,
        "ours_real_tokens_per_step": sum(tokens) / len(tokens),
        "baseline": "trl.SFTTrainer",
        "baseline_batch": trl_batch,
        "baseline_real_tokens_per_step": sum(trl_tokens) / len(trl_tokens),
        "baseline_tokens_per_s": base_tps,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario", choices=["pretrain", "lora", "both"], default="both")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--base", default="smollm2-135m-instruct", help="Built base for the lora scenario.")
    ap.add_argument("--context", type=int, default=384, help="Sequence length of the lora scenario.")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", help="Also write the results here.")
    a = ap.parse_args()
    if a.dtype == "auto":
        a.dtype = "bf16" if torch.cuda.is_available() or cpu_bf16_ok() else "fp32"
    torch.set_num_threads(a.threads)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    results, failed = [], False
    for name in ["pretrain", "lora"] if a.scenario == "both" else [a.scenario]:
        p = get_preset(a.preset)
        shape = (
            (a.batch * p.context, p.hidden, p.intermediate)
            if name == "pretrain"
            else (a.batch * a.context, 576, 1536)
        )
        meter = PeakMeter(dtype, [(2048, 2048, 2048), shape])
        r = (pretrain_scenario if name == "pretrain" else lora_scenario)(a, meter)
        r |= {
            "dtype": a.dtype,
            "threads": a.threads,
            "peak_gflops": meter.peak / 1e9,
            "peak_spread": meter.spread(),
        }
        r["ours_mfu"] = r["flops_per_token"] * r["ours_tokens_per_s"] / meter.peak
        r["baseline_mfu"] = r["flops_per_token"] * r["baseline_tokens_per_s"] / meter.peak
        r["speedup"] = r["ours_tokens_per_s"] / r["baseline_tokens_per_s"]
        bad = max(r["ours_mfu"], r["baseline_mfu"]) > 1.0
        r["valid"] = not bad
        failed |= bad
        results.append(r)
        print(
            f"{r['scenario']}: {r['model']}, {r['params'] / 1e6:.1f} M params, {a.dtype}, "
            f"{a.threads} threads, peak matmul {meter.peak / 1e9:.0f} GFLOP/s ({meter.spread()})"
        )
        print(f"  our loop        : {r['ours_tokens_per_s']:8,.0f} real tokens/s  MFU {r['ours_mfu']:.1%}")
        print(
            f"  {r['baseline']:<16}: {r['baseline_tokens_per_s']:8,.0f} real tokens/s  "
            f"MFU {r['baseline_mfu']:.1%}"
        )
        print(f"  speed-up        : {r['speedup']:.2f}x")
        if bad:
            print(
                "  FAILED MEASUREMENT: an MFU above 100 % means the peak was measured low; "
                "rerun on a quieter machine"
            )
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
