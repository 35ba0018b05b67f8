"""Training throughput and model FLOPs utilisation (MFU) of the ``small`` preset on this machine.

    .venv/bin/python benchmarks/train_throughput.py                # our loop vs transformers.Trainer
    .venv/bin/python benchmarks/train_throughput.py --steps 20 --dtype fp32 --json out.json

MFU = 6 * parameters * tokens/s / peak matmul FLOP/s, where the peak is measured in the same run
with large square matmuls in the training dtype (bf16 or fp32) on the same threads. The baseline is
a plain ``transformers.Trainer`` on the same model, data, batch size and dtype, with its default
optimizer (fused AdamW on torch >= 2.8, as ours). ``--dtype auto`` trains in bf16 only where the CPU
has native bf16 matmuls (AVX512-BF16/AMX) or on a GPU, as the training loop does, else fp32.
Steady-state rates: the first ``--warmup`` steps of each run are not timed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see training/cli.py)

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from transformers import LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from training.loop import TrainArgs, cpu_bf16_ok, train  # noqa: E402
from training.presets import get_preset, model_config  # noqa: E402


def peak_flops(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b  # warm up kernels
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def make_model(preset: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(model_config(preset, get_preset(preset).vocab_size, 1, 2, 0))


class StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())


def steady_rate(times: list[float], warmup: int, tokens_per_step: int) -> float:
    t = times[warmup - 1 :]
    return tokens_per_step * (len(t) - 1) / (t[-1] - t[0])


def ours(
    preset: str, x: torch.Tensor, steps: int, warmup: int, batch: int, dtype: str, threads: int
) -> float:
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
        )
        train(
            make_model(preset),
            (x, x),
            (x[:batch], x[:batch]),
            args,
            on_step=lambda s, st: times.append(time.perf_counter()),
        )
    return steady_rate(times, warmup, batch * x.shape[1])


def hf_trainer(
    preset: str, x: torch.Tensor, steps: int, warmup: int, batch: int, dtype: str, threads: int
) -> float:
    torch.set_num_threads(threads)
    data = [{"input_ids": row, "labels": row} for row in x]
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=batch,
            max_steps=steps,
            learning_rate=1e-3,
            warmup_steps=2,
            lr_scheduler_type="cosine",
            weight_decay=0.1,
            bf16=dtype == "bf16",
            use_cpu=True,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            dataloader_num_workers=0,
            max_grad_norm=1.0,
            disable_tqdm=True,
        )
        Trainer(model=make_model(preset), args=args, train_dataset=data, callbacks=[timer]).train()
    return steady_rate(timer.times, warmup, batch * x.shape[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", help="Also write the results here.")
    a = ap.parse_args()
    if a.dtype == "auto":
        a.dtype = "bf16" if torch.cuda.is_available() or cpu_bf16_ok() else "fp32"
    torch.set_num_threads(a.threads)
    p = get_preset(a.preset)
    x = torch.randint(
        7, p.vocab_size, (a.batch * (a.steps + 1), p.context), generator=torch.Generator().manual_seed(0)
    )
    n_params = sum(t.numel() for t in make_model(a.preset).parameters())
    peak = peak_flops(torch.bfloat16 if a.dtype == "bf16" else torch.float32)
    ours_tps = ours(a.preset, x, a.steps, a.warmup, a.batch, a.dtype, a.threads)
    base_tps = hf_trainer(a.preset, x, a.steps, a.warmup, a.batch, a.dtype, a.threads)
    res = {
        "preset": a.preset,
        "params": n_params,
        "dtype": a.dtype,
        "threads": a.threads,
        "batch_tokens": a.batch * p.context,
        "peak_matmul_gflops": peak / 1e9,
        "ours_tokens_per_s": ours_tps,
        "ours_mfu": 6 * n_params * ours_tps / peak,
        "trainer_tokens_per_s": base_tps,
        "trainer_mfu": 6 * n_params * base_tps / peak,
        "speedup": ours_tps / base_tps,
    }
    print(
        f"{a.preset}: {n_params / 1e6:.2f} M params, {a.dtype}, {a.threads} threads, "
        f"peak matmul {peak / 1e9:.0f} GFLOP/s"
    )
    print(f"  training loop   : {ours_tps:8,.0f} tokens/s  MFU {res['ours_mfu']:.1%}")
    print(f"  HF Trainer      : {base_tps:8,.0f} tokens/s  MFU {res['trainer_mfu']:.1%}")
    print(f"  speed-up        : {res['speedup']:.2f}x")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    main()
