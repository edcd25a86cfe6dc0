"""Dependency-aware channel groups, found by tracing a model with torch.fx.

Every Conv/Linear output opens a *channel space*. Channel-wise operations (BatchNorm, element-wise
activations, pooling, dropout, depthwise convolutions, permutes, channel-major flattening) carry a
space through unchanged; a residual ``add``/``mul`` of two tensors ties their spaces together (one
union-find class); a concatenation along the channels lays several spaces side by side. A
*channel group* is one such class: removing its channel ``c`` means slicing row ``c`` of every
producer in the group (and its bias), entry ``c`` of every BatchNorm and depthwise conv the channel
passes through, and the matching input columns of every Conv/Linear that reads it, at the offset
where the group sits inside that consumer's (possibly concatenated) input.

Anything the analysis cannot prove channel-exact *blocks* the groups it touches, with the reason:
normalisations over the channel dimension (LayerNorm, GroupNorm), a flatten that makes the features
token-major (``Linear`` on ``(B, T, C)`` then ``flatten(1)``), grouped convolutions, indexing,
element-wise products with per-channel constants, reaching the model output, shared modules, and
any operation not known to keep channels separate. Blocked groups are never sliced.
"""

from __future__ import annotations

import math
import operator
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp


class UnsupportedGraphError(ValueError):
    """The model's graph cannot be traced, or a requested channel removal cannot be sliced exactly."""


@dataclass(frozen=True)
class Slot:
    """Where a group's channel ``c`` lives in one module.

    ``role``: ``out`` (weight row ``offset + c`` and bias of a Conv/Linear), ``dw`` (channel of a
    depthwise conv), ``norm`` (entry of a BatchNorm/InstanceNorm), ``in`` (input columns
    ``(offset + c) * fpc + j`` for ``j < fpc`` of a Conv/Linear).
    """

    module: str
    role: str
    offset: int = 0
    fpc: int = 1


@dataclass(frozen=True)
class ChannelGroup:
    """Channels removed together; ``name`` is the first producer in graph order."""

    name: str
    size: int
    slots: tuple[Slot, ...] = field(default=())

    @property
    def producers(self) -> tuple[str, ...]:
        return tuple(s.module for s in self.slots if s.role == "out")

    @property
    def scored(self) -> tuple[Slot, ...]:
        """Slots whose weight rows belong to the channel (producers and depthwise convs)."""
        return tuple(s for s in self.slots if s.role in ("out", "dw"))

    @property
    def consumers(self) -> tuple[str, ...]:
        return tuple(s.module for s in self.slots if s.role == "in")


@dataclass(frozen=True)
class _Segment:
    space: int | None  # None: channels that cannot be removed (e.g. the image channels)
    length: int


@dataclass(frozen=True)
class _Layout:
    cdim: int
    segments: tuple[_Segment, ...]
    fpc: int = 1

    @property
    def channels(self) -> int:
        return sum(s.length for s in self.segments)


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d,
          nn.InstanceNorm2d, nn.InstanceNorm3d)  # fmt: skip
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.Tanh, nn.Sigmoid,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Identity, nn.Dropout,
    nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
)  # fmt: skip
# timm's activation/regularisation modules are traced into unless they are leaves; by name:
_ELEMENTWISE_CLASS_NAMES = {"GELU", "GELUTanh", "QuickGELU", "Swish", "SiLU", "HardSwish", "HardSigmoid",
                            "Mish", "DropPath", "Identity"}  # fmt: skip
_SPATIAL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample, nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d, nn.ZeroPad2d,
)  # fmt: skip
_ELEMENTWISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.elu, F.selu, F.hardswish,
    F.hardsigmoid, F.hardtanh, F.mish, F.softplus, torch.tanh, torch.sigmoid, F.sigmoid, F.tanh,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, torch.clone, torch.abs, torch.exp, operator.neg,
}  # fmt: skip
_SPATIAL_FUNCTIONS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
    F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.interpolate,
}  # fmt: skip
_ELEMENTWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "contiguous", "clone",
                        "detach", "float", "half", "bfloat16", "to", "type_as", "abs", "exp", "neg"}  # fmt: skip
_COMBINE = {operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
            torch.add, torch.sub, torch.mul}  # fmt: skip
_COMBINE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_"}
_NON_TENSOR_METHODS = {"size", "dim", "numel", "type", "ndimension"}


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with a clear error when the model is not traceable."""
    try:
        return fx.symbolic_trace(model)
    except Exception as error:  # fx raises many kinds of errors for dynamic control flow
        raise UnsupportedGraphError(
            f"cannot trace {type(model).__name__} with torch.fx ({type(error).__name__}: {error}); "
            "channel surgery needs a model without data-dependent control flow"
        ) from error


def default_example_input(model: nn.Module, batch: int = 2, size: int = 32) -> torch.Tensor:
    """A guess at a valid input: the first Conv's channels at ``size`` px, or the first Linear's width."""
    for module in model.modules():
        if isinstance(module, _CONVS):
            spatial = (size,) * (module.weight.dim() - 2)
            return torch.randn(batch, module.in_channels, *spatial)
        if isinstance(module, nn.Linear):
            return torch.randn(batch, module.in_features)
    raise ValueError(f"{type(model).__name__} has no Conv or Linear layer; pass example_input")


def _propagate_shapes(graph: fx.GraphModule, example: torch.Tensor | Sequence[torch.Tensor]) -> None:
    inputs = (example,) if torch.is_tensor(example) else tuple(example)
    modes = {m: m.training for m in graph.modules()}
    device = next((p.device for p in graph.parameters()), torch.device("cpu"))
    graph.eval()
    try:
        with torch.no_grad():
            ShapeProp(graph).propagate(*(x.to(device) for x in inputs))
    except Exception as error:
        raise UnsupportedGraphError(
            f"the example input {[tuple(x.shape) for x in inputs]} does not run through the model "
            f"({type(error).__name__}: {error}); pass example_input of the right shape"
        ) from error
    finally:
        for m, mode in modes.items():
            m.training = mode


def _shape(node: Any) -> tuple[int, ...] | None:
    if not isinstance(node, fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _describe(node: fx.Node) -> str:
    target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", node.target)
    return f"{node.name} ({node.op} {target})"


class _Analysis:
    """One pass over the fx graph in topological order, building layouts, slots and blocks."""

    def __init__(self, graph: fx.GraphModule, model: nn.Module):
        self.graph = graph
        self.modules = dict(graph.named_modules())
        self.original = dict(model.named_modules())  # get_attr owners keep their class only here
        self.parent: list[int] = []
        self.space_size: list[int] = []
        self.space_name: list[str] = []
        self.blocked: dict[int, str] = {}
        self.slots: dict[int, list[Slot]] = defaultdict(list)  # space -> slots
        self.layouts: dict[fx.Node, _Layout | None] = {}
        self.calls: dict[str, int] = defaultdict(int)
        self.attr_reads: set[str] = set()
        self.functional_norms: set[str] = set()

    # ---------------------------------------------------------------- union-find
    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        keep, drop = min(ra, rb), max(ra, rb)  # the earlier producer names the group
        self.parent[drop] = keep
        if drop in self.blocked and keep not in self.blocked:
            self.blocked[keep] = self.blocked[drop]

    def new_space(self, name: str, size: int) -> int:
        self.parent.append(len(self.parent))
        self.space_size.append(size)
        self.space_name.append(name)
        return len(self.parent) - 1

    def block(self, layout: _Layout | None, reason: str) -> None:
        if layout is None:
            return
        for seg in layout.segments:
            if seg.space is not None:
                self.blocked.setdefault(self.find(seg.space), reason)

    def add_slots(self, layout: _Layout, module: str, role: str) -> None:
        offset = 0
        for seg in layout.segments:
            if seg.space is not None:
                self.slots[seg.space].append(Slot(module, role, offset, layout.fpc))
            offset += seg.length

    # ---------------------------------------------------------------- traversal
    def run(self) -> None:
        for node in self.graph.graph.nodes:
            try:
                self.layouts[node] = self.visit(node)
            except (AttributeError, IndexError, TypeError, ValueError, ZeroDivisionError) as error:
                # an operation whose arguments this analysis does not understand: refuse, never guess
                self.unknown(
                    node, self.tracked_inputs(node), f"{_describe(node)} could not be analysed ({error})"
                )
                self.layouts[node] = None

    def tracked_inputs(self, node: fx.Node) -> list[tuple[fx.Node, _Layout]]:
        return [(n, lay) for n in node.all_input_nodes if (lay := self.layouts.get(n)) is not None]

    def visit(self, node: fx.Node) -> _Layout | None:
        if node.op in ("placeholder", "get_attr"):
            if node.op == "get_attr":
                self.attr_reads.add(str(node.target).rsplit(".", 1)[0])
            return None
        tracked = self.tracked_inputs(node)
        if node.op == "output":
            for _, layout in tracked:
                self.block(layout, "its channels reach the model output")
            return None
        if node.op == "call_module":
            return self.visit_module(node, tracked)
        if not tracked:
            return None
        if _shape(node) is None:  # size(), dim(), shape: a non-tensor result reads no channel values
            if node.op == "call_method" and node.target in _NON_TENSOR_METHODS:
                return None
            if node.op == "call_function" and node.target is getattr:
                return None
        return self.visit_function(node, tracked)

    def unknown(self, node: fx.Node, tracked: list[tuple[fx.Node, _Layout]], why: str = "") -> None:
        reason = why or f"{_describe(node)} is not known to keep channels separate"
        for _, layout in tracked:
            self.block(layout, reason)

    def visit_module(self, node: fx.Node, tracked: list[tuple[fx.Node, _Layout]]) -> _Layout | None:
        name = str(node.target)
        module = self.modules[name]
        self.calls[name] += 1
        layout = tracked[0][1] if tracked and tracked[0][0] is node.args[0] else None
        if isinstance(module, (nn.Linear, *_CONVS)):
            return self.visit_layer(node, name, module, layout, tracked)
        if not tracked:
            return None
        if layout is None:
            self.unknown(node, tracked, f"{name} takes these channels as a secondary argument")
            return None
        if isinstance(module, _NORMS):
            if layout.cdim != 1 or layout.fpc != 1:
                self.unknown(node, tracked, f"norm {name} does not act on the channel dimension here")
                return None
            self.add_slots(layout, name, "norm")
            return layout
        if isinstance(module, nn.LayerNorm | nn.GroupNorm | nn.LocalResponseNorm):
            return self.visit_norm_over(node, module, layout, tracked)
        if isinstance(module, _ELEMENTWISE_MODULES) or type(module).__name__ in _ELEMENTWISE_CLASS_NAMES:
            if isinstance(module, nn.PReLU) and module.num_parameters > 1:
                self.unknown(node, tracked, f"{name} has per-channel parameters")
                return None
            return layout
        if isinstance(module, _SPATIAL_MODULES):
            return self.spatial(node, layout, tracked)
        if isinstance(module, nn.Flatten):
            return self.flatten(node, layout, module.start_dim, module.end_dim)
        if isinstance(module, nn.Softmax | nn.LogSoftmax):
            return self.along_dim(node, layout, tracked, module.dim)
        self.unknown(
            node, tracked, f"{name} ({type(module).__name__}) is not known to keep channels separate"
        )
        return None

    def visit_layer(
        self,
        node: fx.Node,
        name: str,
        module: nn.Module,
        layout: _Layout | None,
        tracked: list[tuple[fx.Node, _Layout]],
    ) -> _Layout | None:
        out_shape = _shape(node)
        if len(tracked) > (1 if layout is not None else 0):
            self.unknown(node, tracked, f"{name} takes extra tensor arguments")
        if isinstance(module, _CONVS):
            groups, cin, cout = module.groups, module.in_channels, module.out_channels
            if groups > 1 and groups == cin == cout:  # depthwise: channel c in -> channel c out
                if layout is None:
                    return None
                if layout.cdim != 1 or layout.fpc != 1:
                    self.unknown(
                        node, tracked, f"depthwise {name} reads a tensor whose channels are not at dim 1"
                    )
                    return None
                self.add_slots(layout, name, "dw")
                return layout
            if groups > 1:
                self.block(layout, f"grouped convolution {name} (groups={groups}) reads these channels")
                space = self.new_space(name, cout)
                self.blocked[space] = f"grouped convolution {name} (groups={groups})"
                self.slots[space].append(Slot(name, "out"))
                return _Layout(1, (_Segment(space, cout),))
            if layout is not None:
                if layout.cdim != 1 or layout.fpc != 1 or layout.channels != cin:
                    self.block(layout, f"{name} does not read these channels at dim 1")
                else:
                    self.add_slots(layout, name, "in")
            space = self.new_space(name, cout)
            self.slots[space].append(Slot(name, "out"))
            return _Layout(1, (_Segment(space, cout),))
        ndim = len(out_shape) if out_shape is not None else 2
        if layout is not None:
            if layout.cdim != ndim - 1:
                self.block(
                    layout,
                    f"Linear {name} mixes dim {ndim - 1} while these channels are at dim {layout.cdim}",
                )
            elif layout.channels * layout.fpc != module.in_features:
                self.block(
                    layout, f"Linear {name} has {module.in_features} inputs for {layout.channels} channels"
                )
            else:
                self.add_slots(layout, name, "in")
        space = self.new_space(name, module.out_features)
        self.slots[space].append(Slot(name, "out"))
        return _Layout(ndim - 1, (_Segment(space, module.out_features),))

    def visit_norm_over(
        self, node: fx.Node, module: nn.Module, layout: _Layout, tracked: list[tuple[fx.Node, _Layout]]
    ) -> _Layout | None:
        shape = _shape(node) or ()
        if isinstance(module, nn.LayerNorm):
            normalized = range(len(shape) - len(module.normalized_shape), len(shape))
            if layout.cdim not in normalized:
                return layout if not module.elementwise_affine else self._affine_block(node, tracked)
        self.unknown(
            node, tracked, f"{node.target} ({type(module).__name__}) normalises over these channels: "
            "removing one changes the statistics of the others",
        )  # fmt: skip
        return None

    def _affine_block(self, node: fx.Node, tracked: list[tuple[fx.Node, _Layout]]) -> None:
        self.unknown(node, tracked, f"{node.target} has affine parameters over a non-channel dimension")
        return None

    def spatial(
        self, node: fx.Node, layout: _Layout, tracked: list[tuple[fx.Node, _Layout]]
    ) -> _Layout | None:
        if layout is None or layout.cdim != 1 or layout.fpc != 1:
            self.unknown(node, tracked, f"{_describe(node)} pools a tensor whose channels are not at dim 1")
            return None
        return layout

    def flatten(self, node: fx.Node, layout: _Layout | None, start: int, end: int) -> _Layout | None:
        if layout is None:
            return None
        shape = _shape(node.all_input_nodes[0]) or ()
        ndim = len(shape)
        start, end = start % ndim, end % ndim
        if end < layout.cdim:
            return _Layout(layout.cdim - (end - start), layout.segments, layout.fpc)
        if start > layout.cdim:
            return layout
        if start == layout.cdim:
            inner = math.prod(shape[start + 1 : end + 1])
            return _Layout(start, layout.segments, layout.fpc * inner)
        self.block(
            layout,
            f"{_describe(node)} flattens dims {start}..{end} with the channels at dim {layout.cdim}, "
            "not first: the features are token-major and cannot be sliced channel by channel",
        )
        return None

    def along_dim(
        self, node: fx.Node, layout: _Layout, tracked: list[tuple[fx.Node, _Layout]], dim: int | None
    ) -> _Layout | None:
        ndim = len(_shape(node) or ())
        if dim is None or dim % max(ndim, 1) == layout.cdim:
            self.unknown(node, tracked, f"{_describe(node)} mixes values along the channel dimension")
            return None
        return layout

    # ---------------------------------------------------------------- functions and methods
    def visit_function(self, node: fx.Node, tracked: list[tuple[fx.Node, _Layout]]) -> _Layout | None:
        target = node.target
        first = node.args[0] if node.args else None
        layout = self.layouts.get(first) if isinstance(first, fx.Node) else None
        is_method = node.op == "call_method"
        elementwise = (is_method and target in _ELEMENTWISE_METHODS) or (
            not is_method and target in _ELEMENTWISE_FUNCTIONS
        )
        if elementwise and len(tracked) == 1 and layout is not None:
            return layout
        if not is_method and target in _SPATIAL_FUNCTIONS and len(tracked) == 1 and layout is not None:
            return self.spatial(node, layout, tracked)
        if (is_method and target in _COMBINE_METHODS) or (not is_method and target in _COMBINE):
            return self.combine(node, tracked)
        if (not is_method and target in (torch.cat, torch.concat)) or (is_method and target == "cat"):
            return self.concat(node, tracked)
        if layout is not None and len(tracked) == 1:
            if (not is_method and target is torch.flatten) or (is_method and target == "flatten"):
                return self.flatten(node, layout, _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1))
            if (is_method and target in ("view", "reshape")) or (not is_method and target is torch.reshape):
                return self.reshape(node, layout)
            if (is_method and target in ("unsqueeze", "squeeze")) or target in (
                torch.unsqueeze,
                torch.squeeze,
            ):
                return self.reshape(node, layout)
            if (is_method and target == "permute") or target is torch.permute:
                dims = node.args[1:] if is_method else _arg(node, 1, "dims")
                dims = list(dims[0]) if len(dims) == 1 and isinstance(dims[0], list | tuple) else list(dims)
                ndim = len(dims)
                return _Layout([d % ndim for d in dims].index(layout.cdim), layout.segments, layout.fpc)
            if (is_method and target == "transpose") or target is torch.transpose:
                ndim = len(_shape(node) or ())
                a, b = _arg(node, 1, "dim0") % ndim, _arg(node, 2, "dim1") % ndim
                cdim = b if layout.cdim == a else a if layout.cdim == b else layout.cdim
                return _Layout(cdim, layout.segments, layout.fpc)
            if (is_method and target in ("mean", "sum", "amax")) or target in (
                torch.mean,
                torch.sum,
                torch.amax,
            ):
                return self.reduce(node, layout, tracked)
            if (is_method and target in ("softmax", "log_softmax")) or target in (F.softmax, F.log_softmax,
                                                                                  torch.softmax):  # fmt: skip
                return self.along_dim(node, layout, tracked, _arg(node, 1, "dim"))
            if not is_method and target is F.layer_norm:
                return self.functional_layer_norm(node, layout, tracked)
            if not is_method and target is F.batch_norm:
                return self.functional_batch_norm(node, layout, tracked)
        self.unknown(node, tracked)
        return None

    def functional_layer_norm(
        self, node: fx.Node, layout: _Layout, tracked: list[tuple[fx.Node, _Layout]]
    ) -> _Layout | None:
        ndim = len(_shape(node) or ())
        normalized = _arg(node, 1, "normalized_shape")
        count = len(normalized) if isinstance(normalized, list | tuple) else 1
        if layout.cdim >= ndim - count:
            self.unknown(node, tracked, f"{_describe(node)} (layer_norm) normalises over these channels: "
                         "removing one changes the statistics of the others")  # fmt: skip
            return None
        return layout

    def functional_batch_norm(
        self, node: fx.Node, layout: _Layout, tracked: list[tuple[fx.Node, _Layout]]
    ) -> _Layout | None:
        """``F.batch_norm`` with a BatchNorm module's own buffers (timm's BatchNormAct2d)."""
        owners = {
            str(a.target).rsplit(".", 1)[0]
            for a in node.args[1:5]
            if isinstance(a, fx.Node) and a.op == "get_attr"
        }
        owner = next(iter(owners)) if len(owners) == 1 else None
        module = self.original.get(owner) if owner is not None else None
        if (
            not isinstance(module, nn.modules.batchnorm._NormBase)
            or layout.cdim != 1
            or layout.fpc != 1
            or module.num_features != layout.channels
        ):
            self.unknown(node, tracked)
            return None
        self.functional_norms.add(owner)
        self.calls[owner] += 1
        self.add_slots(layout, owner, "norm")
        return layout

    def reduce(
        self, node: fx.Node, layout: _Layout, tracked: list[tuple[fx.Node, _Layout]]
    ) -> _Layout | None:
        in_ndim = len(_shape(node.all_input_nodes[0]) or ())
        dims = _arg(node, 1, "dim")
        keepdim = bool(_arg(node, 2, "keepdim", False))
        if dims is None:
            self.unknown(node, tracked, f"{_describe(node)} reduces over every dimension, channels included")
            return None
        dims = [d % in_ndim for d in (dims if isinstance(dims, list | tuple) else [dims])]
        if layout.cdim in dims or layout.fpc != 1:
            self.unknown(node, tracked, f"{_describe(node)} reduces over the channel dimension")
            return None
        cdim = layout.cdim if keepdim else layout.cdim - sum(d < layout.cdim for d in dims)
        return _Layout(cdim, layout.segments)

    def reshape(self, node: fx.Node, layout: _Layout) -> _Layout | None:
        before, after = _shape(node.all_input_nodes[0]), _shape(node)
        if before is None or after is None:
            self.block(layout, f"{_describe(node)} reshapes to an unknown shape")
            return None
        if before == after:
            return layout
        squeezed_before = [i for i, s in enumerate(before) if s != 1]
        squeezed_after = [i for i, s in enumerate(after) if s != 1]
        if [before[i] for i in squeezed_before] == [after[i] for i in squeezed_after] and before[
            layout.cdim
        ] != 1:
            return _Layout(squeezed_after[squeezed_before.index(layout.cdim)], layout.segments, layout.fpc)
        for start in range(len(before)):  # a flatten of before[start..end] into one dimension?
            for end in range(start + 1, len(before)):
                merged = (*before[:start], math.prod(before[start : end + 1]), *before[end + 1 :])
                if merged == after:
                    return self.flatten(node, layout, start, end)
        self.block(
            layout, f"{_describe(node)} reshapes {before} -> {after}, which splits or mixes the channels"
        )
        return None

    def combine(self, node: fx.Node, tracked: list[tuple[fx.Node, _Layout]]) -> _Layout | None:
        out_shape = _shape(node) or ()
        first = tracked[0][1]
        for other in node.all_input_nodes:
            if self.layouts.get(other) is not None:
                continue
            shape = _shape(other)
            if shape is None:
                continue
            offset = len(out_shape) - len(shape)  # broadcasting aligns on the right
            index = first.cdim - offset
            if 0 <= index < len(shape) and shape[index] != 1:
                self.unknown(node, tracked, f"{_describe(node)} combines these channels with {other.name}, "
                             "a tensor that varies along the channels and is not tracked")  # fmt: skip
                return None
        for _, layout in tracked[1:]:
            same = (
                layout.cdim == first.cdim
                and layout.fpc == first.fpc
                and [s.length for s in layout.segments] == [s.length for s in first.segments]
            )
            if not same:
                self.unknown(
                    node, tracked, f"{_describe(node)} combines tensors whose channels are split differently"
                )
                return None
            for a, b in zip(first.segments, layout.segments, strict=True):
                if a.space is None or b.space is None:
                    if a.space != b.space:
                        self.unknown(
                            node, tracked, f"{_describe(node)} combines removable with fixed channels"
                        )
                        return None
                else:
                    self.union(a.space, b.space)
        return first

    def concat(self, node: fx.Node, tracked: list[tuple[fx.Node, _Layout]]) -> _Layout | None:
        tensors = _arg(node, 0, "tensors")
        ndim = len(_shape(node) or ())
        dim = _arg(node, 1, "dim", 0) % ndim
        segments: list[_Segment] = []
        for t in tensors:
            layout = self.layouts.get(t)
            if layout is None:
                segments.append(_Segment(None, (_shape(t) or (0,) * ndim)[dim]))
            elif layout.cdim != dim or layout.fpc != 1:
                self.unknown(
                    node, tracked, f"{_describe(node)} concatenates along dim {dim}, not the channels"
                )
                return None
            else:
                segments.extend(layout.segments)
        return _Layout(dim, tuple(segments))

    # ---------------------------------------------------------------- result
    def groups(self) -> tuple[list[ChannelGroup], dict[str, str]]:
        for module, count in self.calls.items():
            if count > 1:
                for space, slots in self.slots.items():
                    if any(s.module == module for s in slots):
                        self.blocked.setdefault(self.find(space), f"module {module} is called {count} times")
        for space, slots in self.slots.items():
            reads = self.attr_reads - self.functional_norms
            read = next((s.module for s in slots if s.module in reads), None)
            if read is not None:
                self.blocked.setdefault(self.find(space), f"the parameters of {read} are read directly")
        members: dict[int, list[int]] = defaultdict(list)
        for space in range(len(self.parent)):
            members[self.find(space)].append(space)
        groups, skipped = [], {}
        for root, spaces in sorted(members.items()):
            name = self.space_name[root]
            if root in self.blocked:
                for s in spaces:
                    skipped[self.space_name[s]] = self.blocked[root]
                continue
            slots = tuple(dict.fromkeys(slot for s in spaces for slot in self.slots[s]))
            groups.append(ChannelGroup(name, self.space_size[root], slots))
        return groups, skipped


def analyse(
    model: nn.Module, example_input: torch.Tensor | Sequence[torch.Tensor] | None = None
) -> tuple[list[ChannelGroup], dict[str, str]]:
    """Trace ``model`` and return its removable channel groups and, for every other producer
    (Conv/Linear), the reason its channels cannot be removed."""
    graph = trace(model)
    _propagate_shapes(graph, default_example_input(model) if example_input is None else example_input)
    analysis = _Analysis(graph, model)
    analysis.run()
    return analysis.groups()


def find_channel_groups(
    model: nn.Module, example_input: torch.Tensor | Sequence[torch.Tensor] | None = None
) -> tuple[list[ChannelGroup], dict[str, str]]:
    """Alias of :func:`analyse` (groups, and the reason each other producer was skipped)."""
    return analyse(model, example_input)
