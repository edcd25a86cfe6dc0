"""Channel groups and surgery: slim == masked on real torchvision/timm networks, refusals with reasons."""

import pytest
import timm
import torch
import torchvision
from torch import nn

from sparse_dst.models import create_model
from sparse_dst.surgery import conv_linear_macs, module_index_masks, remove_channels
from sparse_dst.tracing import UnsupportedGraphError, analyse


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights with a sensible scale, random BN statistics and affine terms (so that a
    wrongly sliced BatchNorm or bias would show in the outputs), eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            p.copy_(
                torch.randn(p.shape, generator=gen) / fan_in**0.5
                if p.dim() > 1
                else torch.randn(p.shape, generator=gen) * 0.3
                + (1.0 if "gamma" in name or name.endswith("norm.weight") else 0.0)
            )
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model.eval()


def _mask_removed(model: nn.Module, keep: dict[str, torch.Tensor], groups: list) -> None:
    """Zero producer rows and consumer columns of removed channels (what Chase's masks do)."""
    rows, cols = module_index_masks(model, keep, groups)
    with torch.no_grad():
        for name, r in rows.items():
            module = model.get_submodule(name)
            if not isinstance(module, nn.modules.batchnorm._NormBase):
                module.weight[~r] = 0.0
        for name, c in cols.items():
            model.get_submodule(name).weight[:, ~c] = 0.0


def _random_keep(groups: list, seed: int, fraction: float = 0.5) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for g in groups:
        vector = torch.rand(g.size, generator=gen) >= fraction
        vector[0] = True
        keep[g.name] = vector
    return keep


def _vgg11_bn_small() -> nn.Module:
    """torchvision's VGG-11-BN features and classifier structure, with a narrow classifier
    (built on the meta device first: the 25088x4096 layer is slow to initialise)."""
    with torch.device("meta"):
        model = torchvision.models.vgg11_bn(num_classes=10)
        model.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 16), nn.ReLU(True), nn.Dropout(), nn.Linear(16, 10)
        )
    model = model.to_empty(device="cpu")
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
    return model


NETWORKS = {
    "resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    "resnet50": lambda: torchvision.models.resnet50(num_classes=10),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10),
    "vgg11_bn": _vgg11_bn_small,
    "densenet121": lambda: torchvision.models.densenet121(num_classes=10),
    "convnext_atto": lambda: timm.create_model("convnext_atto", num_classes=10),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_slim_equals_masked_on_real_networks(name: str) -> None:
    torch.manual_seed(0)
    model = _randomise(NETWORKS[name](), seed=1)
    x = torch.randn(2, 3, 32, 32)
    groups, skipped = analyse(model, x)
    keep = _random_keep(groups, seed=2)
    _mask_removed(model, keep, groups)
    slim = remove_channels(model, keep, groups)
    with torch.no_grad():
        masked, small = model(x), slim(x)
    assert small.shape == masked.shape
    assert float((small - masked).abs().max()) <= 1e-5 * float(masked.abs().max())
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())
    assert conv_linear_macs(slim, x) < conv_linear_macs(model, x)
    for g in groups:  # every member sliced to the kept width (at its offset)
        for slot in g.scored:
            assert (
                slim.get_submodule(slot.module).weight.shape[0]
                <= model.get_submodule(slot.module).weight.shape[0]
            )
    assert all(reason for reason in skipped.values())


def test_resnet_residual_channels_form_one_group() -> None:
    groups, skipped = analyse(torchvision.models.resnet18(num_classes=10), torch.randn(1, 3, 32, 32))
    by_name = {g.name: g for g in groups}
    stem = by_name["conv1"]  # stem + the layer1 residual stream
    assert set(stem.producers) == {"conv1", "layer1.0.conv2", "layer1.1.conv2"}
    assert {"layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.downsample.0"} <= set(
        stem.consumers
    )
    stage2 = by_name["layer2.0.conv2"]
    assert set(stage2.producers) == {"layer2.0.conv2", "layer2.0.downsample.0", "layer2.1.conv2"}
    assert len(groups) == 12  # 4 residual streams + 8 inner convs: every conv can shed channels
    assert skipped == {"fc": "its channels reach the model output"}


def test_densenet_concatenation_offsets() -> None:
    model = torchvision.models.densenet121(num_classes=10)
    groups, _ = analyse(model, torch.randn(1, 3, 32, 32))
    layer2 = next(g for g in groups if g.name == "features.denseblock1.denselayer2.conv2")
    # its 32 channels sit after conv0's 64 and layer 1's 32 in every later concatenation
    offsets = {s.module: s.offset for s in layer2.slots if s.role == "in"}
    assert offsets["features.denseblock1.denselayer3.conv1"] == 96
    assert offsets["features.transition1.conv"] == 96


def test_mobilenet_depthwise_conv_is_a_group_member() -> None:
    groups, _ = analyse(torchvision.models.mobilenet_v2(num_classes=10), torch.randn(1, 3, 32, 32))
    expand = next(g for g in groups if g.name == "features.2.conv.0.0")
    roles = {(s.module, s.role) for s in expand.slots}
    assert ("features.2.conv.1.0", "dw") in roles and ("features.2.conv.2", "in") in roles


class TokenMajor(nn.Module):
    """Linear on (B, T, C), flatten(1) (token-major features), Linear: not sliceable per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 6)
        self.fc2 = nn.Linear(5 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.flatten(torch.relu(self.fc1(x)), 1))


def test_token_major_flatten_is_refused_with_the_reason() -> None:
    model = TokenMajor()
    groups, skipped = analyse(model, torch.randn(2, 5, 8))
    assert groups == []
    assert "token-major" in skipped["fc1"]
    with pytest.raises(UnsupportedGraphError, match="token-major"):
        remove_channels(model, {"fc1": torch.tensor([True, False] * 3)}, example_input=torch.randn(2, 5, 8))


def test_channel_major_flatten_expands_columns() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 2 * 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(nn.functional.max_pool2d(torch.relu(self.conv(x)), 2), 1))

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(2, 1, 4, 4)
    groups, _ = analyse(net, x)
    (group,) = groups
    assert [(s.module, s.role, s.fpc) for s in group.slots] == [("conv", "out", 1), ("fc", "in", 4)]
    keep = {"conv": torch.tensor([True, False, True, False])}
    _mask_removed(net, keep, groups)
    slim = remove_channels(net, keep, groups)
    assert slim.fc.weight.shape == (3, 8)
    assert torch.allclose(slim(x), net(x), atol=1e-6)


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm1d(8)
        self.b = nn.Conv1d(8, 4, 3)
        self.c = nn.Conv3d(4, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(torch.relu(self.bn(self.a(x))))
        y = self.c(y[:, :, None, :, None])
        return self.fc(y.mean((2, 3, 4)))


def test_conv1d_and_conv3d_are_analysed_and_sliced() -> None:
    torch.manual_seed(0)
    model = _randomise(Conv1dNet(), seed=3)
    x = torch.randn(2, 3, 10)
    groups, skipped = analyse(model, x)
    names = {g.name for g in groups}
    assert "a" in names  # Conv1d -> BatchNorm1d -> Conv1d: removable
    assert "indexes" in skipped["b"] or "not known" in skipped["b"]  # y[:, :, None, :, None] is refused
    keep = {"a": torch.tensor([True, False] * 4)}
    _mask_removed(model, keep, groups)
    slim = remove_channels(model, keep, groups)
    assert slim.a.out_channels == 4 and slim.b.in_channels == 4 and slim.bn.num_features == 4
    assert torch.allclose(slim(x), model(x), atol=1e-6)


@pytest.mark.parametrize(
    ("module", "reason"),
    [
        (
            nn.Sequential(
                nn.Conv2d(3, 8, 1), nn.GroupNorm(2, 8), nn.Conv2d(8, 2, 1), nn.Flatten(), nn.LazyLinear(2)
            ),
            "normalises",
        ),
        (
            nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=2), nn.Flatten(), nn.LazyLinear(2)),
            "grouped",
        ),
        (nn.Sequential(nn.Linear(4, 6), nn.Softmax(dim=-1), nn.Linear(6, 2)), "mixes values"),
    ],
)
def test_cross_channel_operations_block_their_groups(module: nn.Module, reason: str) -> None:
    x = torch.randn(2, 3, 6, 6) if isinstance(module[0], nn.Conv2d) else torch.randn(2, 4)
    module(x)  # materialise lazy layers
    groups, skipped = analyse(module, x)
    assert any(reason in r for r in skipped.values()), skipped
    first = "0"
    assert first not in {g.name for g in groups}


def test_bad_keep_values_are_refused() -> None:
    model = create_model("resnet18", width=0.125)
    x = torch.randn(1, 3, 16, 16)
    groups, _ = analyse(model, x)
    with pytest.raises(UnsupportedGraphError, match=r"layer1\.0\.conv2.*group 'conv1'"):
        remove_channels(model, {"layer1.0.conv2": torch.ones(8, dtype=torch.bool)}, groups)
    with pytest.raises(ValueError, match="removes every channel"):
        remove_channels(model, {"layer1.0.conv1": torch.zeros(8, dtype=torch.bool)}, groups)
    with pytest.raises(ValueError, match="bool vector of length 8"):
        remove_channels(model, {"layer1.0.conv1": torch.ones(7, dtype=torch.bool)}, groups)
    with pytest.raises(UnsupportedGraphError, match="reach the model output"):
        remove_channels(model, {"linear": torch.ones(10, dtype=torch.bool)}, example_input=x)


def test_untraceable_model_is_refused_clearly() -> None:
    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > 0 else x

    with pytest.raises(UnsupportedGraphError, match="cannot trace Dynamic"):
        analyse(Dynamic())


def test_macs_of_a_linear_and_conv() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 2 * 2, 5))
    # conv: 2*2 outputs x 2 channels x 9 MACs = 72; linear: 8 x 5 = 40
    assert conv_linear_macs(model, torch.randn(3, 1, 4, 4)) == 112
