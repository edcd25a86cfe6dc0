"""Schedules of the topology update rate and of the channel sparsity."""

from __future__ import annotations

import math


def cosine_update_rate(step: int, total_steps: int, initial: float, final: float = 0.0) -> float:
    """Cosine-annealed prune-and-grow fraction: ``initial`` at step 0, ``final`` at ``total_steps``.

    rate(t) = final + (initial - final) * (1 + cos(pi * t / T)) / 2, constant after T
    (as RigL's and the reference's ``CosineDecay``).
    """
    if total_steps <= 0 or step >= total_steps:
        return final
    return final + (initial - final) * (1.0 + math.cos(math.pi * max(step, 0) / total_steps)) / 2.0


def cubic_sparsity(
    step: int, final_sparsity: float, start_step: int, end_step: int, initial: float = 0.0
) -> float:
    """Gradual (cubic) sparsity schedule of Zhu & Gupta, as Chase uses for channels.

    s(t) = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))**3 between ``start_step`` and
    ``end_step``; ``initial`` before, ``final_sparsity`` after.
    """
    if step <= start_step:
        return initial
    if step >= end_step:
        return final_sparsity
    remaining = 1.0 - (step - start_step) / (end_step - start_step)
    return final_sparsity + (initial - final_sparsity) * remaining**3
