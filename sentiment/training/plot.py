"""The loss and accuracy curves of a run, as a PNG next to its metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sentiment.atomic import atomic_write


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "valid"):
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in rows], marker="o", label=split)
        ax_acc.plot(epochs, [r[f"{split}_accuracy"] for r in rows], marker="o", label=split)
    # the extra objectives' losses (train.adversarial, ...), where a run has them on
    for column, label in (("train_adversarial_loss", "adversarial"), ("train_virtual_adversarial_loss", "VAT (KL)"),
                          ("train_entropy", "entropy")):
        if all(column in r for r in rows):
            ax_loss.plot(epochs, [r[column] for r in rows], marker=".", linestyle="--", label=label)
    ax_loss.set(title="loss (supervised: train, valid)", xlabel="epoch")
    ax_acc.set(title="accuracy", xlabel="epoch")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole: no 1.5 on the axis
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(Path(path), lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
