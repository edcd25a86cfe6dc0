"""Image classifiers by name: a package's own registry first, then timm, then torchvision."""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any

import torch
from torch import nn

from research_systems_core.registry import Registry
from research_systems_core.validation import UnknownNameError, check_int

__all__ = ["WeightsUnavailableError", "create_image_model", "image_model_names"]

_IMAGENET_CLASSES = 1000


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights are neither cached locally nor downloadable from here."""


@functools.cache
def _timm_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


@functools.cache
def _torchvision_names() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))  # classification only


def _is_timm(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))  # accepts pretrained tags such as resnet18.a1_in1k


def image_model_names(registry: Registry | None = None) -> list[str]:
    """Every name :func:`create_image_model` accepts without a prefix (registry, timm, torchvision)."""
    own = registry.names() if registry is not None else []
    return sorted(set(own) | set(_timm_names()) | set(_torchvision_names()))


def _unknown(name: str, candidates: list[str], where: str) -> UnknownNameError:
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    return UnknownNameError(f"unknown model {name!r} (looked in {where}){hint}")


def create_image_model(
    name: str,
    *,
    num_classes: int,
    in_chans: int = 3,
    pretrained: bool = False,
    registry: Registry | None = None,
) -> nn.Module:
    """Build an image classifier by name; the result has ``.num_classes``.

    Lookup: ``registry`` (called with ``num_classes``/``in_chans``), then ``timm:NAME`` or
    ``torchvision:NAME``, then a bare name in timm, then in torchvision. For torchvision the first
    convolution and the classifier are replaced when ``in_chans``/``num_classes`` differ from 3/1000.
    ``pretrained=True`` needs the weights cached or a network; otherwise WeightsUnavailableError.
    """
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"model name must be a non-empty string, got {name!r}")
    num_classes = check_int("num_classes", num_classes, minimum=1)
    in_chans = check_int("in_chans", in_chans, minimum=1)
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False, got {pretrained!r}")
    if registry is not None and not isinstance(registry, Registry):
        raise TypeError(
            f"registry must be a research_systems_core.registry.Registry, got {type(registry).__name__}"
        )
    if registry is not None and name in registry:
        return _registered_model(registry, name, num_classes, in_chans, pretrained)
    source, _, bare = name.partition(":") if ":" in name else ("", "", name)
    if source == "timm" or (not source and _is_timm(bare)):
        if not _is_timm(bare):
            raise _unknown(bare, list(_timm_names()), "timm")
        return _timm_model(bare, num_classes, in_chans, pretrained)
    if source == "torchvision" or (not source and bare in _torchvision_names()):
        if bare not in _torchvision_names():
            raise _unknown(bare, list(_torchvision_names()), "torchvision classification models")
        return _torchvision_model(bare, num_classes, in_chans, pretrained)
    if source:
        raise ValueError(f"unknown model source {source!r} in {name!r}; use timm:NAME or torchvision:NAME")
    where = ("the package registry, " if registry is not None else "") + "timm and torchvision"
    raise _unknown(name, image_model_names(registry), where)


def _registered_model(
    registry: Registry, name: str, num_classes: int, in_chans: int, pretrained: bool
) -> nn.Module:
    """Call a registered factory with ``num_classes`` and, when it takes them, ``in_chans``/``pretrained``.

    A factory without an ``in_chans`` (``pretrained``) parameter is fine for 3 channels (no weights);
    asking it for anything else is a ValueError instead of a silently ignored option.
    """
    factory = registry.get(name)
    try:
        params: Any = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no introspectable signature: pass everything
        params = None
    takes_all = params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepts = {key: takes_all or key in params for key in ("in_chans", "pretrained")}
    if not accepts["in_chans"] and in_chans != 3:
        raise ValueError(
            f"registered model {name!r} takes no in_chans parameter; it cannot build in_chans={in_chans}"
        )
    if not accepts["pretrained"] and pretrained:
        raise ValueError(
            f"registered model {name!r} takes no pretrained parameter; it has no pretrained weights"
        )
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if accepts["in_chans"]:
        kwargs["in_chans"] = in_chans
    if pretrained:
        kwargs["pretrained"] = True
    return _with_num_classes(factory(**kwargs), num_classes)


def _with_num_classes(model: Any, num_classes: int) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"the registered model factory returned {type(model).__name__}, not an nn.Module")
    if not hasattr(model, "num_classes"):
        model.num_classes = num_classes
    return model


def _offline_error(name: str, exc: BaseException) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"pretrained weights for {name!r} are not cached here and cannot be downloaded "
        f"({type(exc).__name__}: {exc}); run once with internet to cache them, or use pretrained=False"
    )


def _timm_model(name: str, num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    except (OSError, RuntimeError) as exc:
        if pretrained:
            raise _offline_error(name, exc) from exc
        raise


def _torchvision_model(name: str, num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    import torchvision

    if pretrained:
        try:
            model = torchvision.models.get_model(name, weights="DEFAULT")
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise _offline_error(name, exc) from exc
        if num_classes != _IMAGENET_CLASSES:
            _replace_classifier(model, num_classes)
    else:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_chans != 3:
        _replace_first_conv(model, in_chans, keep_weights=pretrained)
    model.num_classes = num_classes
    return model


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, module)


def _replace_classifier(model: nn.Module, num_classes: int) -> None:
    """Swap every ImageNet output layer (Linear or 1x1 conv with 1000 outputs) for a fresh one."""
    heads = [
        (path, m)
        for path, m in model.named_modules()
        if (isinstance(m, nn.Linear) and m.out_features == _IMAGENET_CLASSES)
        or (isinstance(m, nn.Conv2d) and m.out_channels == _IMAGENET_CLASSES)
    ]
    if not heads:
        raise ValueError(f"cannot find the 1000-class output layer of {type(model).__name__} to replace")
    for path, old in heads:
        if isinstance(old, nn.Linear):
            new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        else:
            new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding)
        _set_submodule(model, path, new)


def _replace_first_conv(model: nn.Module, in_chans: int, *, keep_weights: bool) -> None:
    """Give the stem convolution ``in_chans`` inputs (pretrained RGB filters adapted as timm does)."""
    first = next(
        ((p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3), None
    )
    if first is None:
        raise ValueError(f"cannot find the 3-channel input convolution of {type(model).__name__}")
    path, old = first
    new = nn.Conv2d(
        in_chans,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    if keep_weights:
        with torch.no_grad():
            w = old.weight
            if in_chans == 1:
                new.weight.copy_(w.sum(dim=1, keepdim=True))
            else:
                reps = -(-in_chans // 3)
                new.weight.copy_(w.repeat(1, reps, 1, 1)[:, :in_chans] * (3.0 / in_chans))
            if old.bias is not None:
                new.bias.copy_(old.bias)
    _set_submodule(model, path, new)
    if getattr(model, "transform_input", False):
        model.transform_input = False  # inception's ImageNet re-normalisation assumes RGB input
