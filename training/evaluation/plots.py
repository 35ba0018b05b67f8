"""Loss curves and evaluation charts (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def loss_curve(history: list, val: list, path: str | Path, title: str) -> None:
    """Train loss per step (with a moving average) and validation loss points."""
    fig, ax = plt.subplots(figsize=(7, 4))
    if history:
        steps = [h[0] for h in history]
        loss = [h[1] for h in history]
        ax.plot(steps, loss, alpha=0.3, label="train (per step)")
        k = max(1, len(loss) // 50)
        smooth = [
            sum(loss[max(0, i - k + 1) : i + 1]) / len(loss[max(0, i - k + 1) : i + 1])
            for i in range(len(loss))
        ]
        ax.plot(steps, smooth, label=f"train (mean of {k})")
    if val:
        ax.plot([v[0] for v in val], [v[1] for v in val], "o-", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bar_chart(names: list[str], values: list[float], path: str | Path, title: str, ylabel: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(names, values, color=["tab:blue", "tab:orange", "tab:green", "tab:red"][: len(names)])
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.3g}", ha="center", va="bottom")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
