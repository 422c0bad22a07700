"""``DIR/curves.png``: the loss, its three terms and the collapse diagnostics per epoch (matplotlib)."""

from __future__ import annotations

from typing import Any


def plot_curves(history: list[dict[str, Any]], path: str, title: str = "") -> str:
    """Plot the per-epoch ``history`` records (keys as in :mod:`backends.common.metrics`) to ``path``.

    Panels: the loss; the invariance, variance and covariance terms (unweighted, log scale); the mean
    per-dimension std of the embeddings against the collapse threshold; the effective rank.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .monitor import COLLAPSE_FRACTION

    epochs = [r["epoch"] for r in history]

    def series(key: str) -> list[float]:
        return [float("nan") if r.get(key) is None else r[key] for r in history]

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    axes[0].plot(epochs, series("loss"), marker=".")
    axes[0].set_title("loss")
    for key in ("invariance", "variance", "covariance"):
        values = series(key)
        axes[1].plot(epochs, [v if v > 0 else float("nan") for v in values], marker=".", label=key)
    axes[1].set_yscale("log")
    axes[1].set_title("terms (unweighted)")
    axes[1].legend()
    axes[2].plot(epochs, series("std_mean"), marker=".", label="mean std")
    if any("std_min" in r for r in history):
        axes[2].plot(epochs, series("std_min"), marker=".", label="min std")
    target = history[0].get("variance_target", 1.0) if history else 1.0
    axes[2].axhline(COLLAPSE_FRACTION * target, color="red", ls="--", lw=1, label="collapse")
    axes[2].set_title("per-dimension std")
    axes[2].legend()
    axes[3].plot(epochs, series("effective_rank"), marker=".")
    axes[3].set_title("effective rank")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
