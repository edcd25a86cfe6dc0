import pytest
import torch
from torch import nn

from sparse_dst.models import create_model
from sparse_dst.surgery import conv_linear_macs, recalibrate_batchnorm, remove_channels
from sparse_dst.tracing import UnsupportedGraphError, find_channel_groups


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


def _mask_channels(model: nn.Module, keep: dict[str, torch.Tensor]) -> None:
    """Zero the consumer's input columns of removed channels (what Chase's masks do)."""
    groups = {g.producer: g for g in find_channel_groups(model)[0]}
    with torch.no_grad():
        for producer, vector in keep.items():
            group = groups[producer]
            model.get_submodule(producer).weight[~vector] = 0.0
            cols = (~vector).repeat_interleave(group.features_per_channel)
            model.get_submodule(group.consumer).weight[:, cols] = 0.0


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("small_cnn", {"in_channels": 1}, (3, 1, 12, 12)),
        ("mlp", {"in_features": 36, "hidden": (20, 12)}, (3, 1, 6, 6)),
        ("resnet18", {"width": 0.125}, (2, 3, 16, 16)),
        ("resnet50", {"width": 0.0625}, (2, 3, 16, 16)),
        ("vgg11", {"width": 0.125}, (2, 3, 32, 32)),
    ],
)
def test_slim_output_equals_masked_output(name: str, kwargs: dict, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = _randomise(create_model(name, **kwargs), seed=1)
    groups, _ = find_channel_groups(model)
    gen = torch.Generator().manual_seed(2)
    keep = {}
    for g in groups:
        n = model.get_submodule(g.producer).weight.shape[0]
        vector = torch.rand(n, generator=gen) < 0.5
        vector[0] = True
        keep[g.producer] = vector
    _mask_channels(model, keep)
    slim = remove_channels(model, keep)
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.allclose(slim(x), model(x), atol=1e-5, rtol=1e-4)
    removed = sum(int((~v).sum()) for v in keep.values())
    assert removed > 0
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())
    for g in groups:
        assert slim.get_submodule(g.producer).weight.shape[0] == int(keep[g.producer].sum())
        for norm in g.norms:
            assert slim.get_submodule(norm).num_features == int(keep[g.producer].sum())


def test_resnet_groups_are_the_inner_convs_only() -> None:
    groups, skipped = find_channel_groups(create_model("resnet18", width=0.125))
    assert [g.producer for g in groups][:2] == ["layer1.0.conv1", "layer1.1.conv1"]
    assert all(g.producer.endswith("conv1") and g.consumer.endswith("conv2") for g in groups)
    assert "add" in skipped["layer1.0.conv2"]
    assert "used 2 times" in skipped["conv1"]
    bottleneck, _ = find_channel_groups(create_model("resnet50", width=0.0625))
    assert {g.producer.rsplit(".", 1)[1] for g in bottleneck} == {"conv1", "conv2"}
    assert len(bottleneck) == 2 * 16


def test_flatten_consumer_columns() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 2 * 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(nn.functional.max_pool2d(torch.relu(self.conv(x)), 2), 1))

    torch.manual_seed(0)
    net = Net().eval()
    groups, _ = find_channel_groups(net)
    assert groups[0].features_per_channel == 4
    keep = {"conv": torch.tensor([True, False, True, False])}
    _mask_channels(net, keep)
    slim = remove_channels(net, keep)
    assert slim.fc.weight.shape == (3, 8)
    x = torch.randn(2, 1, 4, 4)
    assert torch.allclose(slim(x), net(x), atol=1e-6)


def test_unsupported_graphs_are_refused_clearly() -> None:
    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x) if x.sum() > 0 else x

    with pytest.raises(UnsupportedGraphError, match="cannot trace Dynamic"):
        find_channel_groups(Dynamic())
    model = create_model("resnet18", width=0.125)
    with pytest.raises(UnsupportedGraphError, match=r"layer1\.0\.conv2.*add"):
        remove_channels(model, {"layer1.0.conv2": torch.ones(8, dtype=torch.bool)})
    with pytest.raises(ValueError, match="removes every channel"):
        remove_channels(model, {"layer1.0.conv1": torch.zeros(8, dtype=torch.bool)})


def test_recalibration_gives_exact_batch_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    batches = [torch.randn(4, 1, 5, 5) for _ in range(3)]
    recalibrate_batchnorm(model, batches)
    with torch.no_grad():
        features = torch.cat([model[0](b) for b in batches])
    assert torch.allclose(model[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-5)
    assert model[1].momentum == 0.1


def test_macs_of_a_linear_and_conv() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 2 * 2, 5))
    # conv: 2*2 outputs x 2 channels x 9 MACs = 72; linear: 8 x 5 = 40
    assert conv_linear_macs(model, torch.randn(3, 1, 4, 4)) == 112
