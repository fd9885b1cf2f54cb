"""Training curves as a PNG (matplotlib's Agg backend: no display needed on any node)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any


def plot_training(metrics: Sequence[dict[str, Any]]) -> bytes:
    """Train and validation loss (nats/token) and validation bits/byte against tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    tokens = [m["tokens"] / 1e6 for m in metrics]
    fig, (loss_ax, bpb_ax) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    loss_ax.plot(tokens, [m["train_loss"] for m in metrics], marker="o", label="train")
    loss_ax.plot(tokens, [m["val_loss"] for m in metrics], marker="o", label="validation")
    loss_ax.set(xlabel="tokens trained (millions)", ylabel="loss (nats/token)", title="Loss")
    loss_ax.legend()
    loss_ax.grid(alpha=0.3)
    bpb_ax.plot(tokens, [m["val_bpb"] for m in metrics], marker="o", color="tab:green")
    bpb_ax.set(
        xlabel="tokens trained (millions)", ylabel="bits per byte", title="Validation bits/byte"
    )
    bpb_ax.grid(alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
