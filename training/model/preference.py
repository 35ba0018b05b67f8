"""Preference tuning from chat feedback: DPO on agent-corrected vs rejected replies, KTO on single 👍/👎.

    python -m training.cli retrain --set preference=dpo     # SFT, then DPO on dpo.jsonl pairs
    python -m training.cli retrain --set preference=kto --set sft=false

Written out here rather than through ``trl``'s ``DPOTrainer``/``KTOTrainer``: those need the
``datasets``/``Trainer`` stack around a loop this project does not use, and the two losses are a few
lines each. Both follow the papers and trl's default ("sigmoid") variants:

* DPO (Rafailov et al. 2023), with ``r(y) = log π(y|x) − log π_ref(y|x)``:
  ``-log σ(β·[r(y⁺) − r(y⁻)])`` for the agent's reply ``y⁺`` over the bot's ``y⁻``.
* KTO (Ethayarajh et al. 2024): with the same ``r`` and a batch estimate
  ``z = max(0, mean r(x, y'))`` over mismatched (context, other completion) pairs, the loss is
  ``λ_D (1 − σ(β(r − z)))`` for 👍 and ``λ_U (1 − σ(β(z − r)))`` for 👎. ``z`` is not differentiated.

The reference model is the starting point of this stage (the SFT result), frozen; its log-probs are
computed once up front. Log-probs are summed over the completion's tokens and its end-of-turn token
(``ChatFormat.completion``: our ``<|end|>``, or a base template's own).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.model.chat_formats import ChatFormat, Example


def completion_logps(model, examples: Sequence[Example], pad: int) -> torch.Tensor:
    """Summed log-probability of each example's masked tokens (differentiable; one padded batch)."""
    width = max(len(ids) for ids, _ in examples)
    x = torch.full((len(examples), width), pad, dtype=torch.long)
    m = torch.zeros((len(examples), width), dtype=torch.bool)
    att = torch.zeros_like(x)
    for r, (ids, mask) in enumerate(examples):
        x[r, : len(ids)] = torch.tensor(ids)
        m[r, : len(ids)] = torch.tensor(mask, dtype=torch.bool)
        att[r, : len(ids)] = 1
    dev = next(model.parameters()).device
    logits = model(input_ids=x.to(dev), attention_mask=att.to(dev)).logits[:, :-1].float()
    logp = torch.gather(F.log_softmax(logits, -1), 2, x[:, 1:, None].to(dev)).squeeze(2)
    return (logp * m[:, 1:].to(dev)).sum(1)


@torch.no_grad()
def batched_logps(model, examples: Sequence[Example], pad: int, batch_size: int = 16) -> torch.Tensor:
    model.eval()
    parts = [
        completion_logps(model, examples[i : i + batch_size], pad)
        for i in range(0, len(examples), batch_size)
    ]
    return torch.cat(parts).cpu() if parts else torch.zeros(0)


def dpo_loss(
    pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, beta: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """Policy/reference log-probs of chosen and rejected completions -> loss, reward accuracy, margin."""
    margin = (pc - rc) - (pr - rr)
    loss = -F.logsigmoid(beta * margin).mean()
    margin = margin.detach()
    return loss, {"accuracy": float((margin > 0).float().mean()), "margin": float(margin.mean())}


def kto_loss(
    p: torch.Tensor,
    r: torch.Tensor,
    p_mismatch: torch.Tensor,
    r_mismatch: torch.Tensor,
    labels: torch.Tensor,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    reward = p - r
    z = (p_mismatch - r_mismatch).mean().clamp(min=0).detach()
    good = desirable_weight * (1 - torch.sigmoid(beta * (reward - z)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (z - reward)))
    loss = torch.where(labels, good, bad).mean()
    reward = reward.detach()
    return loss, {"kl": float(z), "reward_up": float(reward[labels].mean()) if labels.any() else math.nan}


def train_preference(
    model,
    fmt: ChatFormat,
    rows: list[dict],
    method: str,
    steps: int,
    lr: float,
    beta: float,
    batch_size: int = 8,
    seed: int = 0,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> list[dict[str, float]]:
    """Tune ``model`` in place on ``rows`` (dpo.jsonl or kto.jsonl records); returns per-step stats."""
    if method not in ("dpo", "kto"):
        raise ValueError(f"preference method is dpo or kto, not {method!r}")
    ctx = min(model.config.max_position_embeddings, fmt.tok.model_max_length, 1024)
    ref = copy.deepcopy(model).eval()
    n = len(rows)
    if method == "dpo":
        a = [fmt.completion(r["context"], r["chosen"], ctx) for r in rows]
        b = [fmt.completion(r["context"], r["rejected"], ctx) for r in rows]
        labels = torch.ones(n, dtype=torch.bool)
    else:
        a = [fmt.completion(r["context"], r["completion"], ctx) for r in rows]
        # Mismatched pairs (each context with the next row's completion) estimate the KL term.
        b = [fmt.completion(r["context"], rows[(i + 1) % n]["completion"], ctx) for i, r in enumerate(rows)]
        labels = torch.tensor([bool(r["label"]) for r in rows])
    ref_a, ref_b = batched_logps(ref, a, fmt.pad), batched_logps(ref, b, fmt.pad)
    del ref
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    history = []
    model.train()
    for step in (bar := tqdm(range(steps), desc=method, unit="step", mininterval=5)):
        idx = torch.randperm(n, generator=gen)[:batch_size].tolist()
        pa = completion_logps(model, [a[i] for i in idx], fmt.pad).cpu()
        if method == "dpo":
            pb = completion_logps(model, [b[i] for i in idx], fmt.pad).cpu()
        else:  # KTO's KL estimate is not differentiated
            with torch.no_grad():
                pb = completion_logps(model, [b[i] for i in idx], fmt.pad).cpu()
        if method == "dpo":
            loss, stats = dpo_loss(pa, pb, ref_a[idx], ref_b[idx], beta)
        else:
            loss, stats = kto_loss(
                pa, ref_a[idx], pb, ref_b[idx], labels[idx], beta, desirable_weight, undesirable_weight
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        value = float(loss.detach())
        history.append({"step": step + 1, "loss": round(value, 5)} | stats)
        bar.set_postfix(loss=f"{value:.4f}", refresh=False)
    model.eval()
    return history
