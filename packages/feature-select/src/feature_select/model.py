"""The sparse MLP of NeuroFS (reference: d-1000-1000-1000-C, tanh, Erdős–Rényi sparse layers)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from feature_select.sparse_linear import SparseLinear, sample_er_connections
from research_systems_core.registry import Registry
from research_systems_core.validation import check_choice, check_int, check_positive

__all__ = ["ACTIVATIONS", "MODELS", "SparseMLP", "create_model", "layer_gradients"]

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}
MODELS = Registry("model")


class SparseMLP(nn.Module):
    """MLP whose hidden layers are :class:`SparseLinear` with Erdős–Rényi masks.

    The output layer is dense: the reference creates a mask for it but never applies it (its
    Keras layer has no mask constraint), so it is trained dense there too.
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        hidden: Sequence[int] = (1000, 1000, 1000),
        epsilon: float = 13.0,
        activation: str = "tanh",
        backend: str = "auto",
        seed: int = 0,
        init: str = "sparse",
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        check_int("n_features", n_features, minimum=1)
        check_int("n_classes", n_classes, minimum=2)
        hidden = tuple(hidden)
        if not hidden:
            raise ValueError("hidden must list at least one hidden layer size, got ()")
        for size in hidden:
            check_int("hidden layer size", size, minimum=1)
        check_positive("epsilon", epsilon)
        self.activation_name = check_choice("activation", activation, ACTIVATIONS)
        self.activation = ACTIVATIONS[activation]
        rng = np.random.default_rng(seed)
        generator = torch.Generator().manual_seed(seed)
        sizes = [n_features, *hidden]
        layers = []
        for n_in, n_out in itertools.pairwise(sizes):
            rows, cols = sample_er_connections(n_in, n_out, epsilon, rng)
            layers.append(
                SparseLinear(
                    n_in, n_out, rows, cols, backend=backend, generator=generator, init=init, device=device
                )
            )
        self.sparse_layers = nn.ModuleList(layers)
        self.budgets = [layer.n_active for layer in layers]  # connection budget of every layer
        self.output = nn.Linear(hidden[-1], n_classes, device=device)
        limit = math.sqrt(6.0 / (hidden[-1] + n_classes))  # Keras glorot_uniform, zero bias
        with torch.no_grad():
            self.output.weight.copy_(
                (torch.rand(self.output.weight.shape, generator=generator) * 2 - 1) * limit
            )
            self.output.bias.zero_()

    @property
    def input_layer(self) -> SparseLinear:
        return self.sparse_layers[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.sparse_layers:
            h = self.activation(layer(h))
        return self.output(h)

    def l2_penalty(self) -> torch.Tensor:
        """Sum of squares of the sparse layers' weights and biases (the reference regularises those)."""
        return sum(
            (layer.l2_penalty() for layer in self.sparse_layers[1:]), self.sparse_layers[0].l2_penalty()
        )


@MODELS.register("sparse_mlp")
def _sparse_mlp(**kwargs) -> SparseMLP:
    return SparseMLP(**kwargs)


def create_model(name: str = "sparse_mlp", **kwargs) -> nn.Module:
    """timm-style factory: ``create_model("sparse_mlp", n_features=..., n_classes=...)``."""
    return MODELS.create(name, **kwargs)


def layer_gradients(
    model: SparseMLP, x, y: torch.Tensor, batch_size: int
) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
    """Per sparse layer: its input ``a`` (N, n_in) and ``dL/dz`` (N, n_out) of the mean loss.

    ``x`` is a tensor or a :class:`~feature_select.inputs.FeatureMatrix`; for the first layer ``a``
    is ``x`` itself (returned as given, so a sparse matrix stays sparse). The gradient of the loss
    with respect to the (dense) weight is ``a.T @ dz``; callers form it a block of rows at a time.
    """
    n = x.shape[0]
    span = x.span if hasattr(x, "span") else (lambda start, stop: x[start:stop])
    inputs: list[list[torch.Tensor]] = [[] for _ in model.sparse_layers]
    grads: list[list[torch.Tensor]] = [[] for _ in model.sparse_layers]
    for start in range(0, n, batch_size):
        h = span(start, start + batch_size)
        pre = []
        for i, layer in enumerate(model.sparse_layers):
            if i > 0:
                inputs[i].append(h.detach())
            z = layer(h)
            pre.append(z)
            h = model.activation(z)
        loss = F.cross_entropy(model.output(h), y[start : start + batch_size], reduction="sum") / n
        for i, g in enumerate(torch.autograd.grad(loss, pre)):
            grads[i].append(g.detach())
    result = []
    for i in range(len(model.sparse_layers)):
        a = x if i == 0 else torch.cat(inputs[i])
        result.append((a, torch.cat(grads[i])))
    return result
