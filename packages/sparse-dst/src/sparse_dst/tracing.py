"""Find the channel groups of a model that surgery can slice, by tracing it with torch.fx.

A *channel group* is a producer (``Conv2d`` or ``Linear``) whose output reaches exactly one
consumer (``Conv2d`` or ``Linear``) through a plain chain of channel-wise operations
(BatchNorm, element-wise activations, pooling, dropout, flatten). Removing an output channel of
the producer then means slicing the producer's rows (and bias), the BatchNorm in between and the
consumer's input columns. Outputs that feed a residual addition, a concatenation or several
consumers are not sliceable: in ResNets only the inner convolutions of each block qualify, as in
the Chase reference code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn


class UnsupportedGraphError(ValueError):
    """The model's graph cannot be traced or sliced."""


@dataclass(frozen=True)
class ChannelGroup:
    """Producer -> (norms) -> consumer; ``features_per_channel`` > 1 after a flatten."""

    producer: str
    consumer: str
    norms: tuple[str, ...] = field(default=())
    features_per_channel: int = 1

    @property
    def weight(self) -> str:
        return f"{self.producer}.weight"


_PASS_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardswish,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
_PASS_FUNCTIONS = {
    F.relu,
    torch.relu,
    F.relu6,
    F.leaky_relu,
    F.gelu,
    F.silu,
    F.elu,
    torch.tanh,
    torch.sigmoid,
    F.dropout,
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
}
_PASS_METHODS = {"relu", "tanh", "sigmoid", "contiguous"}
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_LAYERS = (nn.Conv2d, nn.Linear)


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with a clear error when the model is not traceable."""
    try:
        return fx.symbolic_trace(model)
    except Exception as error:  # fx raises many kinds of errors for dynamic control flow
        raise UnsupportedGraphError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(error).__name__}: {error}); "
            "channel surgery needs a traceable conv/linear chain"
        ) from error


def _is_flatten(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module" and isinstance(modules[str(node.target)], nn.Flatten):
        return modules[str(node.target)].start_dim == 1
    if node.op == "call_function" and node.target is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        return start == 1
    if node.op == "call_method" and node.target == "flatten":
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        return start == 1
    return False


def _is_passthrough(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _PASS_MODULES)
    if node.op == "call_function":
        return node.target in _PASS_FUNCTIONS
    if node.op == "call_method":
        return node.target in _PASS_METHODS
    return False


def _follow(
    start: fx.Node, modules: dict[str, nn.Module], out_channels: int
) -> tuple[str, tuple[str, ...], int] | str:
    """Walk from a producer to its consumer; return (consumer, norms, features) or a reason."""
    node = start
    norms: list[str] = []
    flattened = False
    while True:
        users = list(node.users)
        if len(users) != 1:
            return f"output of {node.name} is used {len(users)} times"
        node = users[0]
        if node.op == "output":
            return "its output is the model's output"
        if len(node.all_input_nodes) > 1:
            return f"{node.name} combines several tensors"
        if node.op == "call_module":
            module = modules[str(node.target)]
            if isinstance(module, _LAYERS):
                if isinstance(module, nn.Conv2d):
                    if flattened or module.groups != 1 or module.in_channels != out_channels:
                        return f"consumer {node.target} is not a plain conv on these channels"
                    return str(node.target), tuple(norms), 1
                if module.in_features % out_channels != 0:
                    return (
                        f"consumer {node.target} has {module.in_features} inputs for {out_channels} channels"
                    )
                if not flattened and module.in_features != out_channels:
                    return f"consumer {node.target} does not match {out_channels} channels"
                return str(node.target), tuple(norms), module.in_features // out_channels
            if isinstance(module, _NORMS):
                if flattened or module.num_features != out_channels:
                    return f"norm {node.target} is not channel-wise here"
                norms.append(str(node.target))
                continue
        if _is_flatten(node, modules):
            flattened = True
            continue
        if _is_passthrough(node, modules):
            continue
        return f"{node.name} ({node.op} {node.target}) is not a channel-wise operation"


def find_channel_groups(model: nn.Module) -> tuple[list[ChannelGroup], dict[str, str]]:
    """All sliceable producer -> consumer groups, and the reason each other layer was skipped."""
    graph = trace(model)
    modules = dict(graph.named_modules())
    groups: list[ChannelGroup] = []
    skipped: dict[str, str] = {}
    for node in graph.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[str(node.target)], _LAYERS):
            continue
        module = modules[str(node.target)]
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            skipped[str(node.target)] = "grouped convolution"
            continue
        out_channels = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
        found = _follow(node, modules, out_channels)
        if isinstance(found, str):
            skipped[str(node.target)] = found
        else:
            consumer, norms, features = found
            groups.append(ChannelGroup(str(node.target), consumer, norms, features))
    return groups, skipped
