"""The run folder's pictures: loss and validation-accuracy curves per stage, and a confusion matrix."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves(histories: list[dict], path: Path, title: str) -> None:
    """One row per run (teacher, student, baseline); stages side by side on one epoch axis."""
    plt = _pyplot()
    groups: dict[str, list[dict]] = {}
    for h in histories:
        groups.setdefault(h.get("run", h["stage"]), []).append(h)
    fig, axes = plt.subplots(len(groups), 2, figsize=(10, 3.2 * len(groups)), squeeze=False)
    for row, (run, stages) in enumerate(groups.items()):
        offset = 0
        for h in stages:
            epochs = np.arange(offset + 1, offset + len(h["loss"]) + 1)
            axes[row, 0].plot(epochs, h["loss"], label=h["stage"])
            acc = [np.nan if a is None else a for a in h["val_accuracy"]]
            axes[row, 1].plot(epochs, acc, label=h["stage"])
            if "best_epoch" in h:
                axes[row, 1].axvline(offset + h["best_epoch"] + 1, color="grey", lw=0.6, ls=":")
            offset += len(h["loss"])
        axes[row, 0].set_title(f"{run}: training loss")
        axes[row, 1].set_title(f"{run}: val. accuracy (dotted: epoch kept)")
        for ax in axes[row]:
            ax.set_xlabel("epoch")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    plt = _pyplot()
    C = len(classes)
    m = np.zeros((C, C), np.int64)
    np.add.at(m, (y_true, y_pred), 1)
    size = max(4.0, 0.5 * C + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    for i in range(C):
        for j in range(C):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black",
                    fontsize=8)
    labels = [c if len(c) <= 12 else c[:11] + "…" for c in classes]
    ax.set_xticks(range(C), labels, rotation=45, ha="right")
    ax.set_yticks(range(C), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
