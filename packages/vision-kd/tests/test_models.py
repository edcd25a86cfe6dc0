import pytest
import timm
import torch

import vision_kd  # noqa: F401  (registers the models)
from research_systems_core.validation import UnknownNameError
from vision_kd.models import LargeKernelConv, create_model, reparameterize_model
from vision_kd.models.slak import _fuse_bn


def _randomise_bn(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()


@pytest.mark.parametrize(
    ("kernel", "small", "decompose", "sparsity"),
    [(13, 3, True, 0.0), (13, 5, False, 0.0), (9, 3, True, 0.4), (7, None, True, 0.0), (5, 5, True, 0.0)],
)
def test_large_kernel_reparameterisation_is_exact(kernel, small, decompose, sparsity):
    conv = LargeKernelConv(6, kernel, small, decompose)
    _randomise_bn(conv)
    if sparsity:  # exact zeros in the weights, as SLaK's sparse training leaves them
        for branch in conv.branches.values():
            w = branch.conv.weight.data
            w[torch.rand_like(w) < sparsity] = 0.0
    conv.eval()
    x = torch.randn(2, 6, 17, 11)
    before = conv(x)
    assert before.shape == x.shape
    conv.reparameterize()
    assert conv.reparameterized and len(conv.branches) == 0
    assert conv.merged.weight.shape == (6, 1, kernel, kernel)
    torch.testing.assert_close(conv(x), before, atol=1e-5, rtol=1e-5)


def test_decomposed_branches_have_the_paper_shapes():
    conv = LargeKernelConv(4, 31, 5, decompose=True)
    shapes = {name: tuple(b.conv.weight.shape[-2:]) for name, b in conv.branches.items()}
    assert shapes == {"vertical": (31, 5), "horizontal": (5, 31), "small": (5, 5)}


def test_fuse_bn_by_hand():
    bn = torch.nn.BatchNorm2d(1).eval()
    bn.running_mean.fill_(2.0)
    bn.running_var.fill_(4.0 - bn.eps)
    bn.weight.data.fill_(3.0)
    bn.bias.data.fill_(1.0)
    k, b = _fuse_bn(torch.ones(1, 1, 1, 1), bn)
    assert k.item() == pytest.approx(1.5) and b.item() == pytest.approx(1.0 - 2.0 * 1.5)


def test_whole_slak_model_reparameterises_exactly():
    model = timm.create_model("slak_pico", in_chans=1, num_classes=10, ls_init_value=1.0)
    _randomise_bn(model)
    model.eval()
    x = torch.randn(2, 1, 32, 32)
    before = model(x)
    reparameterize_model(model)
    torch.testing.assert_close(model(x), before, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="eval-mode"):
        reparameterize_model(model.train())


def test_registered_in_timm_with_features():
    assert {"slak_tiny", "slak_small", "slak_base", "slak_pico"} <= set(timm.list_models("slak_*"))
    feats = timm.create_model("slak_pico", features_only=True, in_chans=1)(torch.randn(1, 1, 32, 64))
    assert [f.shape[1] for f in feats] == [16, 32, 64, 128]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4]
    tiny = timm.create_model("slak_tiny", num_classes=7)
    assert tiny.head.in_features == int(768 * 1.3)
    assert tiny.stages[0][1].large_kernel.branches["vertical"].conv.weight.shape[-2:] == (51, 5)


@pytest.mark.parametrize("name", ["kd_convnext_micro", "kd_resnet_micro", "kd_vit_micro", "slak_pico"])
def test_small_models_run_and_expose_intermediates(name):
    kwargs = {"img_size": (32, 64)} if "vit" in name else {}
    model = create_model(name, in_chans=1, num_classes=10, **kwargs)
    x = torch.randn(2, 1, 32, 64)
    assert model(x).shape == (2, 10)
    final, inter = model.forward_intermediates(x, indices=[1])
    assert inter[0].ndim == 4
    torch.testing.assert_close(model.forward_head(final), model(x))


def test_unknown_model_and_bad_kernel_errors():
    with pytest.raises(UnknownNameError, match=r"slak_tinyy.*slak_tiny"):
        create_model("slak_tinyy")
    with pytest.raises(ValueError, match="kernel_size must be odd, got 4"):
        LargeKernelConv(4, 4)
    with pytest.raises(ValueError, match="kernel_sizes needs one entry per stage"):
        timm.create_model("slak_pico", kernel_sizes=(7, 5))
    with pytest.raises(ValueError, match="convert-slak"):
        timm.create_model("slak_tiny", pretrained=True)
