"""The learning-rate schedule of the recipe: linear warm-up, then cosine decay (framework-free)."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, final_fraction: float = 0.0) -> float:
    r"""Multiplier of the peak learning rate at optimiser step ``step`` (0-based).

    .. math::

        f(t) = \frac{t + 1}{W}\ (t < W), \qquad
        f(t) = r + (1 - r)\,\frac{1 + \cos\big(\pi\,\frac{t - W}{T - W}\big)}{2}\ (t \ge W)

    with ``W = warmup_steps``, ``T = total_steps`` and ``r = final_fraction`` (the official code decays to
    0.001 of the peak).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))
