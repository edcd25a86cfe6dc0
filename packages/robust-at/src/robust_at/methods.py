"""Adversarial training methods sharing one loop: AT-PGD (Madry), TRADES and AWP.

A method turns a clean batch into the training loss (``loss``) and may act after the optimizer
step (``after_step``: AWP removes its weight perturbation there). WOT wraps any of them from
the outside (see :mod:`robust_at.wot`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from research_systems_core.registry import Registry
from research_systems_core.validation import check_choice, check_int, check_positive
from robust_at.attacks import AttackConfig, pgd

__all__ = ["AWP", "METHODS", "TRADES", "ATMethod", "MadryAT", "create_method"]

METHODS = Registry("method")
ATTACK_MODES = ("train", "eval")


class ATMethod:
    """Base class: ``loss(model, x, y, epoch) -> (loss, logits on the adversarial inputs)``."""

    name = "base"

    def __init__(
        self, attack: AttackConfig, box: tuple[float, float] = (0.0, 1.0), attack_mode: str = "train"
    ) -> None:
        check_choice("attack_mode", attack_mode, ATTACK_MODES)
        self.attack = attack
        self.box = box
        self.attack_mode = attack_mode
        self._inputs_checked = False  # the input box is checked on the first batch (a host sync)

    def _check_inputs_once(self) -> bool:
        first, self._inputs_checked = not self._inputs_checked, True
        return first

    def adversarial(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """The training attack, with the model in ``attack_mode`` (restored afterwards)."""
        was_training = model.training
        model.train(self.attack_mode == "train")
        try:
            return self.attack.run(
                model, x, y, box=self.box, check_inputs=self._check_inputs_once(), **kwargs
            )
        finally:
            model.train(was_training)

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def after_step(self, model: nn.Module) -> None:
        """Called after ``optimizer.step()``."""


class MadryAT(ATMethod):
    """PGD adversarial training (Madry et al. 2018): cross-entropy on PGD examples."""

    name = "at-pgd"

    def loss(self, model, x, y, epoch):
        x_adv = self.adversarial(model, x, y)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits


class TRADES(ATMethod):
    """TRADES (Zhang et al. 2019): CE(clean) + beta * KL(p(x) || p(x_adv)); the attack maximises
    the KL from a 0.001-Gaussian start, with the model in eval mode."""

    name = "trades"

    def __init__(
        self, attack: AttackConfig, box=(0.0, 1.0), attack_mode: str = "eval", beta: float = 6.0
    ) -> None:
        super().__init__(attack, box, attack_mode)
        check_positive("trades_beta", beta, strict=False)
        self.beta = beta

    def loss(self, model, x, y, epoch):
        was_training = model.training
        model.train(self.attack_mode == "train")
        with torch.no_grad():
            clean_probs = F.softmax(model(x), dim=1)
        model.train(was_training)

        def kl_to_clean(logits: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
            return F.kl_div(F.log_softmax(logits, dim=1), clean_probs, reduction="none").sum(1)

        cfg = self.attack
        was_training = model.training
        model.train(self.attack_mode == "train")
        try:
            x_adv = pgd(
                model,
                x,
                y,
                eps=cfg.eps,
                step_size=cfg.step_size,
                steps=cfg.steps,
                norm=cfg.norm,
                restarts=1,
                random_start="normal",
                box=self.box,
                loss_fn=kl_to_clean,
                check_inputs=self._check_inputs_once(),
            )
        finally:
            model.train(was_training)
        logits_clean = model(x)
        logits_adv = model(x_adv)
        robust = (
            F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="sum")
            / x.shape[0]
        )
        return F.cross_entropy(logits_clean, y) + self.beta * robust, logits_adv


class AWP(MadryAT):
    """Adversarial weight perturbation on top of PGD-AT (Wu et al. 2020, AT-AWP).

    Each step: a proxy SGD step (lr ``proxy_lr``) that increases the adversarial loss gives a
    direction per weight tensor (dim > 1), rescaled to that tensor's norm; the model is moved
    by ``gamma`` times it, trained there, and moved back after the optimizer step. BatchNorm
    statistics are untouched by the proxy step (the reference uses a proxy copy).
    """

    name = "awp"
    EPS = 1e-20

    def __init__(
        self,
        attack: AttackConfig,
        box=(0.0, 1.0),
        attack_mode: str = "train",
        gamma: float = 0.01,
        warmup: int = 0,
        proxy_lr: float = 0.01,
    ) -> None:
        super().__init__(attack, box, attack_mode)
        check_positive("awp_gamma", gamma, strict=False)
        check_int("awp_warmup", warmup, minimum=0)
        self.gamma, self.warmup, self.proxy_lr = gamma, warmup, proxy_lr
        self._applied: list[tuple[nn.Parameter, torch.Tensor]] = []

    def weight_perturbation(
        self, model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor
    ) -> list[tuple[nn.Parameter, torch.Tensor]]:
        targets = [
            (n, p) for n, p in model.named_parameters() if p.requires_grad and p.dim() > 1 and "weight" in n
        ]
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        was_training = model.training
        model.train()
        loss = F.cross_entropy(model(x_adv), y)
        grads = torch.autograd.grad(loss, [p for _, p in targets])
        model.train(was_training)
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
        out = []
        for (_, p), g in zip(targets, grads, strict=True):
            diff = self.proxy_lr * g
            out.append((p, p.detach().norm() / (diff.norm() + self.EPS) * diff))
        return out

    def loss(self, model, x, y, epoch):
        x_adv = self.adversarial(model, x, y)
        self._applied = []
        if epoch >= self.warmup and self.gamma > 0:
            self._applied = self.weight_perturbation(model, x_adv, y)
            with torch.no_grad():
                for p, diff in self._applied:
                    p.add_(diff, alpha=self.gamma)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits

    def after_step(self, model):
        with torch.no_grad():
            for p, diff in self._applied:
                p.sub_(diff, alpha=self.gamma)
        self._applied = []


@METHODS.register("at-pgd")
def _at_pgd(attack: AttackConfig, box=(0.0, 1.0), attack_mode: str | None = None, **_) -> ATMethod:
    return MadryAT(attack, box, attack_mode or "train")


@METHODS.register("trades")
def _trades(
    attack: AttackConfig, box=(0.0, 1.0), attack_mode: str | None = None, trades_beta: float = 6.0, **_
) -> ATMethod:
    return TRADES(attack, box, attack_mode or "eval", beta=trades_beta)


@METHODS.register("awp")
def _awp(
    attack: AttackConfig,
    box=(0.0, 1.0),
    attack_mode: str | None = None,
    awp_gamma: float = 0.01,
    awp_warmup: int = 0,
    **_,
) -> ATMethod:
    return AWP(attack, box, attack_mode or "train", gamma=awp_gamma, warmup=awp_warmup)


def create_method(name: str, attack: AttackConfig, **kwargs) -> ATMethod:
    """Build a registered training method (``METHODS.names()``)."""
    return METHODS.create(name, attack=attack, **kwargs)
