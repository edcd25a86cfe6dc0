"""WOT's cost relative to adversarial training, timed per component at the reference's ratio.

One WOT window of the reference (TienjinHuang/WOT, CIFAR-10 PreAct-ResNet-18) is ``gap x
num_gaps = 400 x 4 = 1600`` PGD-10 training steps at batch 128, followed by one refinement:
10 passes of weight learning over the 1000 PGD-10-attacked validation images, BatchNorm
recalibration on 401 training batches and ``num_gaps + 1 = 5`` parameter snapshots. The
overhead of a window is ``refinement / 1600 training steps``; over the reference's 200-epoch
schedule (391 steps per epoch, WOT from epoch 50, the gap doubled at epoch 150) it is smaller
because the windows after epoch 150 are twice as long and the first 50 epochs have no WOT.

The attack work alone fixes a floor: 10 x 1000 attacked images per 1600 x 128 attacked training
images is 4.9%, so a window's overhead cannot go below that on any device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from research_systems_core.batchnorm import recalibrate_batchnorm
from research_systems_core.timing import time_call
from robust_at.attacks import AttackConfig
from robust_at.methods import MadryAT
from robust_at.wot import WOT, Batch, WOTConfig

__all__ = ["REFERENCE_WINDOW", "WOTCost", "measure_wot_overhead", "time_wot_components"]

REFERENCE_WINDOW = {
    "gap": 400,
    "num_gaps": 4,
    "passes": 10,
    "val_images": 1000,
    "bn_batches": 401,
    "batch": 128,
    "epochs": 200,
    "steps_per_epoch": 391,  # 50,000 CIFAR-10 images at batch 128
    "start_epoch": 50,
    "times_epoch": 150,
    "times": 2,
}


@dataclass
class WOTCost:
    """Seconds per component (one training step, one weight-learning pass over the validation
    images, one BatchNorm recalibration, one snapshot) and the overheads they imply."""

    step_s: float
    pass_s: float
    bn_s: float
    snapshot_s: float

    def refinement_s(self, ref: dict = REFERENCE_WINDOW) -> float:
        return ref["passes"] * self.pass_s + self.bn_s + (ref["num_gaps"] + 1) * self.snapshot_s

    def window_percent(self, ref: dict = REFERENCE_WINDOW) -> float:
        """Refinement time as % of the ``gap x num_gaps`` training steps it follows."""
        return 100 * self.refinement_s(ref) / (ref["gap"] * ref["num_gaps"] * self.step_s)

    def schedule_percent(self, ref: dict = REFERENCE_WINDOW) -> float:
        """WOT time as % of the whole reference schedule's training time (WOT from
        ``start_epoch``, the gap multiplied by ``times`` from ``times_epoch``)."""
        window = ref["gap"] * ref["num_gaps"]
        early = (ref["times_epoch"] - ref["start_epoch"]) * ref["steps_per_epoch"] / window
        late = (ref["epochs"] - ref["times_epoch"]) * ref["steps_per_epoch"] / (window * ref["times"])
        total = ref["epochs"] * ref["steps_per_epoch"] * self.step_s
        return 100 * (early + late) * self.refinement_s(ref) / total

    def components_percent(self, ref: dict = REFERENCE_WINDOW) -> dict[str, float]:
        """Each component's share of a window's training time, in %."""
        train = ref["gap"] * ref["num_gaps"] * self.step_s
        return {
            "weight_learning": 100 * ref["passes"] * self.pass_s / train,
            "bn_recalibration": 100 * self.bn_s / train,
            "snapshots": 100 * (ref["num_gaps"] + 1) * self.snapshot_s / train,
        }

    def as_dict(self, ref: dict = REFERENCE_WINDOW) -> dict:
        return {
            **asdict(self),
            "refinement_s": self.refinement_s(ref),
            "window_percent": self.window_percent(ref),
            "schedule_percent": self.schedule_percent(ref),
            "components_percent": self.components_percent(ref),
        }


def _fill_window(wot: WOT, generator: torch.Generator, scale: float = 1e-3) -> None:
    """A synthetic window: the current parameters plus small random steps."""
    base = [p.detach().clone() for p in wot.params]
    wot.snapshots = [base]
    for _ in range(wot.config.num_gaps):
        prev = wot.snapshots[-1]
        step = [torch.randn(t.shape, generator=generator).to(t.device, t.dtype) * scale for t in prev]
        wot.snapshots.append([a + b for a, b in zip(prev, step, strict=True)])


def time_wot_components(
    model: nn.Module,
    wot: WOT,
    train_step: Callable[[], None],
    val_batches: Callable[[], Iterable[Batch]],
    train_batches: list[Batch],
    attack: Callable,
    *,
    bn_batches: int,
    passes_timed: int,
    steps_timed: int,
    device: torch.device | None = None,
    repeats: int = 3,
) -> WOTCost:
    """Time each WOT component on ``model``: ``train_step`` (one AT step), ``passes_timed`` passes
    of weight learning on ``val_batches`` (divided to one pass), BatchNorm recalibration on
    ``bn_batches`` batches cycled from ``train_batches``, and one parameter snapshot."""

    def steps() -> None:
        for _ in range(steps_timed):
            train_step()

    step_s = time_call(steps, device=device, warmup=1, repeats=repeats).median_s / steps_timed
    snapshot_s = time_call(
        lambda: [p.detach().clone() for p in wot.params], device=device, repeats=5
    ).median_s
    gen = torch.Generator().manual_seed(0)
    passes, wot.config.passes = wot.config.passes, passes_timed
    try:
        _fill_window(wot, gen)
        pass_s = (
            time_call(
                lambda: wot.learn_weights(model, val_batches, attack), device=device, warmup=0, repeats=1
            ).median_s
            / passes_timed
        )
    finally:
        wot.config.passes = passes

    def cycled() -> Iterable[Batch]:
        while True:
            yield from train_batches

    bn_s = time_call(
        lambda: recalibrate_batchnorm(model, cycled(), max_batches=bn_batches),
        device=device,
        warmup=0,
        repeats=1,
    ).median_s
    return WOTCost(step_s=step_s, pass_s=pass_s, bn_s=bn_s, snapshot_s=snapshot_s)


def measure_wot_overhead(
    model: nn.Module,
    train_batches: list[Batch],
    val_batches: Callable[[], Iterable[Batch]],
    attack: AttackConfig,
    *,
    bn_batches: int,
    passes_timed: int,
    steps_timed: int,
    device: torch.device | None = None,
    repeats: int = 3,
    check_inputs: bool = True,
) -> WOTCost:
    """:func:`time_wot_components` for PGD adversarial training (SGD, momentum 0.9) of ``model``
    with WOT at the reference's window (``gap x num_gaps``) and its per-tensor momentum rule."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    method = MadryAT(attack)
    config = WOTConfig(
        enabled=True,
        gap=REFERENCE_WINDOW["gap"],
        num_gaps=REFERENCE_WINDOW["num_gaps"],
        momentum_per_tensor=True,
        reset_momentum_each_pass=True,
    )
    wot = WOT(model, config)
    wot.start()
    step = iter(range(10**9))

    def train_step() -> None:
        x, y = train_batches[next(step) % len(train_batches)]
        loss, _ = method.loss(model.train(), x, y, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        wot.record_step()

    def run_attack(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return attack.run(m, x, y, check_inputs=check_inputs)

    return time_wot_components(
        model, wot, train_step, val_batches, train_batches, run_attack, bn_batches=bn_batches,
        passes_timed=passes_timed, steps_timed=steps_timed, device=device, repeats=repeats,
    )  # fmt: skip
