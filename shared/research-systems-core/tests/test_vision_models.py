"""Model factory, normalisation inside the model, mixup helper and evaluation (offline, tiny)."""

from __future__ import annotations

import math
import pathlib

import pytest
import timm
import torch
import torch.distributed as dist
import torchvision
from torch import nn
from torch.utils.data import TensorDataset

from research_systems_core.registry import Registry
from research_systems_core.vision import (
    Normalize,
    WeightsUnavailableError,
    create_image_model,
    evaluate_accuracy,
    make_loader,
    mixup_fn,
    with_normalization,
)
from research_systems_core.vision import models as vision_models


# --------------------------------------------------------------------------- factory
@pytest.mark.parametrize("name", ["resnet18", "timm:resnet18", "torchvision:resnet18"])
def test_resnet18_with_one_channel_and_three_classes(name: str) -> None:
    model = create_image_model(name, num_classes=3, in_chans=1)
    assert model.num_classes == 3
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3)
    is_timm = isinstance(model, timm.models.ResNet)
    assert is_timm == (name != "torchvision:resnet18")


def test_bare_names_fall_back_to_torchvision() -> None:
    model = create_image_model("squeezenet1_0", num_classes=4)  # not a timm name
    assert isinstance(model, torchvision.models.SqueezeNet) and model.num_classes == 4
    assert model.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 4)


def test_registry_is_asked_first() -> None:
    registry = Registry("model")
    calls = []

    @registry.register("resnet18")
    def tiny(num_classes: int, in_chans: int) -> nn.Module:
        calls.append((num_classes, in_chans))
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    model = create_image_model("resnet18", num_classes=5, in_chans=2, registry=registry)
    assert calls == [(5, 2)] and isinstance(model, nn.Sequential) and model.num_classes == 5
    assert isinstance(
        create_image_model("timm:resnet18", num_classes=5, registry=registry), timm.models.ResNet
    )


def test_registered_factories_get_only_what_they_take() -> None:
    registry = Registry("model")
    registry.register("plain")(lambda num_classes: nn.Linear(4, num_classes))
    seen: dict[str, object] = {}

    @registry.register("flexible")
    def flexible(**kwargs: object) -> nn.Module:
        seen.update(kwargs)
        return nn.Linear(4, 2)

    plain = create_image_model("plain", num_classes=6, registry=registry)
    assert plain.out_features == 6 and plain.num_classes == 6
    with pytest.raises(ValueError, match="'plain' takes no in_chans"):
        create_image_model("plain", num_classes=6, in_chans=1, registry=registry)
    with pytest.raises(ValueError, match="'plain' takes no pretrained"):
        create_image_model("plain", num_classes=6, pretrained=True, registry=registry)
    model = create_image_model("flexible", num_classes=2, in_chans=1, pretrained=True, registry=registry)
    assert seen == {"num_classes": 2, "in_chans": 1, "pretrained": True} and model.num_classes == 2
    registry.register("not_a_module")(lambda num_classes, in_chans: "resnet")
    with pytest.raises(TypeError, match="not an nn.Module"):
        create_image_model("not_a_module", num_classes=2, registry=registry)


def test_wrong_names_list_close_matches() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet181'.*close matches: resnet18") as info:
        create_image_model("resnet181", num_classes=3)
    assert len(str(info.value).split("close matches: ")[1].split(", ")) <= 5
    with pytest.raises(ValueError, match=r"'resnt18' \(looked in timm\).*resnet18"):
        create_image_model("timm:resnt18", num_classes=3)
    with pytest.raises(ValueError, match="torchvision classification models.*resnet18"):
        create_image_model("torchvision:resnet18x", num_classes=3)
    with pytest.raises(ValueError, match="model source 'hub'"):
        create_image_model("hub:resnet18", num_classes=3)
    registry = Registry("model")
    registry.register("my_wide_net")(lambda num_classes, in_chans: nn.Identity())
    with pytest.raises(ValueError, match="package registry.*my_wide_net"):
        create_image_model("my_wide_nett", num_classes=3, registry=registry)


def test_bad_arguments_are_rejected_before_building() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        create_image_model("resnet18", num_classes=0)
    with pytest.raises(TypeError, match="in_chans"):
        create_image_model("resnet18", num_classes=3, in_chans=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pretrained"):
        create_image_model("resnet18", num_classes=3, pretrained=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="model name"):
        create_image_model("", num_classes=3)


def test_pretrained_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(timm, "create_model", offline)
    monkeypatch.setattr(torchvision.models, "get_model", offline)
    for name in ("timm:resnet18", "torchvision:resnet18"):
        with pytest.raises(WeightsUnavailableError, match="cannot be downloaded.*pretrained=False"):
            create_image_model(name, num_classes=3, pretrained=True)
    assert issubclass(WeightsUnavailableError, FileNotFoundError)  # CLIs: one line, exit 2


def test_pretrained_torchvision_head_and_stem_are_adapted() -> None:
    torch.manual_seed(0)
    original = torchvision.models.resnet18(num_classes=1000).eval()
    adapted = torchvision.models.resnet18(num_classes=1000).eval()
    adapted.load_state_dict(original.state_dict())
    vision_models._replace_classifier(adapted, 3)
    vision_models._replace_first_conv(adapted, 1, keep_weights=True)
    assert adapted.fc.out_features == 3 and adapted.conv1.in_channels == 1
    # a grey image through the summed filters equals the RGB-repeated image through the original ones
    grey = torch.rand(2, 1, 32, 32)
    features = nn.Sequential(*list(original.children())[:-1])
    features_adapted = nn.Sequential(*list(adapted.children())[:-1])
    torch.testing.assert_close(
        features_adapted(grey), features(grey.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ValueError, match="3-channel input convolution"):
        vision_models._replace_first_conv(adapted, 1, keep_weights=False)  # already adapted


def test_first_conv_for_more_channels_keeps_the_response_scale() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    old = model.conv1.weight.detach().clone()
    vision_models._replace_first_conv(model, 6, keep_weights=True)
    torch.testing.assert_close(model.conv1.weight[:, :3], old * 0.5)
    torch.testing.assert_close(model.conv1.weight[:, 3:], old * 0.5)


# --------------------------------------------------------------------------- normalisation
def test_normalize_and_with_normalization() -> None:
    norm = Normalize((0.5, 0.25), (0.5, 2.0))
    x = torch.tensor([[[[1.0]], [[0.25]]]])
    assert norm(x).flatten().tolist() == [1.0, 0.0]
    assert norm.state_dict() == {}  # statistics are configuration, not checkpointed state
    with pytest.raises(ValueError, match="N x 2 x H x W"):
        norm(torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="std"):
        Normalize((0.5,), (0.0,))
    with pytest.raises(ValueError, match="same non-zero length"):
        Normalize((0.5, 0.5), (0.2,))
    model = create_image_model("resnet10t", num_classes=3)
    wrapped = with_normalization(model, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert isinstance(wrapped, nn.Sequential) and wrapped[1] is model and wrapped.num_classes == 3
    images = torch.rand(2, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(wrapped.eval()(images), model((images - 0.5) / 0.25))
    with pytest.raises(TypeError, match="nn.Module"):
        with_normalization("resnet18", (0.5,), (0.5,))  # type: ignore[arg-type]


def test_normalized_model_traces_with_torch_fx() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    wrapped = with_normalization(model, (0.4, 0.5, 0.6), (0.2, 0.3, 0.4)).eval()
    images = torch.rand(2, 3, 8, 8)
    expected = wrapped(images)
    traced = torch.fx.symbolic_trace(wrapped)  # sparse-dst traces models with torch.fx
    torch.testing.assert_close(traced(images), expected)
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        wrapped(torch.rand(2, 1, 8, 8))  # would otherwise broadcast silently to 3 channels


def test_mixup_fn() -> None:
    assert mixup_fn(10, 0.0, 0.0, 0.1) is None
    mixer = mixup_fn(10, 0.8, 1.0, 0.1)
    assert (mixer.mixup_alpha, mixer.cutmix_alpha, mixer.label_smoothing, mixer.num_classes) == (
        0.8,
        1.0,
        0.1,
        10,
    )
    _, targets = mixer(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert targets.shape == (4, 10)
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    for args, match in [
        ((10, -1.0, 0.0, 0.0), "mixup"),
        ((10, 0.0, math.inf, 0.0), "cutmix"),
        ((10, 0.2, 0.0, 1.0), "label_smoothing"),
        ((1, 0.2, 0.0, 0.0), "num_classes"),
    ]:
        with pytest.raises(ValueError, match=match):
            mixup_fn(*args)


# --------------------------------------------------------------------------- evaluation
class _Logits(nn.Module):
    """The 'image' is already the logits row; a parameter so .train()/.eval() matter."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


LOGITS = torch.tensor(
    [
        [2.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 3.0],
        [1.0, 2.0, 0.0],
        [0.5, 0.0, 0.0],
        [0.0, 0.0, 0.1],
        [4.0, 0.0, 0.0],
    ]
)
LABELS = torch.tensor([0, 1, 1, 0, 0, 2, 2])  # argmax = 0, 1, 2, 1, 0, 2, 0 -> 4 of 7 correct


def _hand_loss() -> float:
    total = 0.0
    for row, label in zip(LOGITS.tolist(), LABELS.tolist(), strict=True):
        total += math.log(sum(math.exp(v) for v in row)) - row[label]
    return total / len(LABELS)


def test_evaluate_accuracy_matches_a_hand_count() -> None:
    loader = make_loader(TensorDataset(LOGITS, LABELS), batch_size=3, train=False, device="cpu", workers=0)
    model = _Logits().train()
    metrics = evaluate_accuracy(model, loader, device="cpu")
    assert metrics["n"] == 7 and metrics["accuracy"] == pytest.approx(4 / 7)
    assert metrics["loss"] == pytest.approx(_hand_loss(), rel=1e-6)
    assert model.training, "the model's mode is restored"
    low = evaluate_accuracy(model, loader, device=torch.device("cpu"), precision="bf16")
    assert low["accuracy"] == pytest.approx(4 / 7) and low["loss"] == pytest.approx(_hand_loss(), rel=2e-2)
    with pytest.raises(ValueError, match="precision"):
        evaluate_accuracy(model, loader, device="cpu", precision="fp8")
    with pytest.raises(ValueError, match="no samples"):
        evaluate_accuracy(model, [], device="cpu")
    with pytest.raises(ValueError, match="batch x classes"):
        evaluate_accuracy(nn.Flatten(0), loader, device="cpu")


def test_evaluate_accuracy_reduces_over_the_process_group(tmp_path: pathlib.Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        loader = make_loader(
            TensorDataset(LOGITS, LABELS), batch_size=2, train=False, device="cpu", workers=0
        )
        metrics = evaluate_accuracy(_Logits(), loader, device="cpu")
        assert metrics["n"] == 7 and metrics["accuracy"] == pytest.approx(4 / 7)
    finally:
        dist.destroy_process_group()


def _rank_worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        loader = make_loader(
            TensorDataset(LOGITS, LABELS), batch_size=2, train=False, device="cpu", workers=0
        )
        metrics = evaluate_accuracy(_Logits(), loader, device="cpu")
        train = make_loader(
            TensorDataset(torch.arange(10)), batch_size=2, train=True, device="cpu", workers=0
        )
        pathlib.Path(out).write_text(
            f"{metrics['n']} {metrics['accuracy']!r} {metrics['loss']!r} {len(loader.sampler)} "
            f"{','.join(str(int(i)) for (b,) in train for i in b)}"
        )
    finally:
        dist.destroy_process_group()


def test_two_ranks_shard_evaluation_exactly_and_reduce(tmp_path: pathlib.Path) -> None:
    """Two forked gloo ranks: 7 samples split 4 + 3 (no padding), metrics summed to the full count."""
    context = torch.multiprocessing.get_context("fork")
    outs = [tmp_path / f"rank{r}.txt" for r in range(2)]
    procs = [
        context.Process(target=_rank_worker, args=(r, 2, str(tmp_path / "pg"), str(outs[r])))
        for r in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    results = [o.read_text().split() for o in outs]
    for n, accuracy, loss, _, _ in results:
        assert int(n) == 7 and float(accuracy) == pytest.approx(4 / 7)
        assert float(loss) == pytest.approx(_hand_loss(), rel=1e-6)
    assert [int(r[3]) for r in results] == [4, 3]
    shards = [[int(i) for i in r[4].split(",")] for r in results]
    assert len(shards[0]) == len(shards[1]) == 4 and not set(shards[0]) & set(shards[1])
