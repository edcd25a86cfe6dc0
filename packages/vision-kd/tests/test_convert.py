"""The converter, checked against checkpoints written in the reference's own key layout.

The test writes the reference ``models/SLaK.py`` state-dict keys by hand (``downsample_layers``,
``stages.i.j.large_kernel.LoRA1/LoRA2/small_conv.{conv,bn}``, ``norm``, ``pwconv1/2``, ``gamma``,
``head``) inside a ``main.py``-style checkpoint dict (``model``, ``epoch``, ``args``)."""

import argparse
import collections

import pytest
import timm
import torch
from typer.testing import CliRunner

import vision_kd  # noqa: F401
from research_systems_core.errors import UserError
from vision_kd.cli import app
from vision_kd.convert import read_reference_state_dict, slak_from_reference
from vision_kd.weights import load_model, resolve_model


class _Arbitrary:
    """An object that torch.load(weights_only=True) must refuse to rebuild."""


BRANCH_TO_REF = {"vertical": "LoRA1", "horizontal": "LoRA2", "large": "lkb_origin", "small": "small_conv"}


def _ours(**kw):
    torch.manual_seed(0)
    model = timm.create_model("slak_tiny", in_chans=3, num_classes=7, depths=(1, 2, 1, 1), dims=(8, 16, 24, 32),
                              width_factor=1.0, kernel_sizes=(9, 7, 7, 5), small_kernel=3, ls_init_value=0.5, **kw)  # fmt: skip
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return model.eval()


def _to_reference_layout(state):
    """Our keys -> the reference's (written out rule by rule, independently of vision_kd.convert)."""
    out = collections.OrderedDict()
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "stem":  # stem.{0,1}.leaf -> downsample_layers.0.{0,1}.leaf
            ref = f"downsample_layers.0.{parts[1]}.{parts[2]}"
        elif (
            parts[0] == "stages" and parts[2] == "0"
        ):  # stages.i.0.{0,1}.leaf -> downsample_layers.i.{0,1}.leaf
            ref = f"downsample_layers.{parts[1]}.{parts[3]}.{parts[4]}"
        elif parts[0] == "stages":  # stages.i.(j+1).rest -> stages.i.j.rest
            i, j, rest = parts[1], int(parts[2]) - 1, parts[3:]
            if rest[0] == "large_kernel" and rest[1] == "branches":
                rest = ["large_kernel", BRANCH_TO_REF[rest[2]], *rest[3:]]
            elif rest[0] == "large_kernel" and rest[1] == "merged":
                rest = ["large_kernel", "lkb_reparam", *rest[2:]]
            ref = ".".join(["stages", i, str(j), *rest])
        else:
            ref = key
        out[ref] = value.clone()
    return out


def _write_reference(path, model, key="model", prefix=""):
    state = {prefix + k: v for k, v in _to_reference_layout(model.state_dict()).items()}
    args = argparse.Namespace(model="SLaK_tiny", kernel_size=[9, 7, 7, 5, 3], Decom=True, sparse=True)
    torch.save({key: state, "epoch": 299, "args": args}, path)
    return state


def test_reference_layout_has_the_reference_key_names(tmp_path):
    state = _write_reference(tmp_path / "ck.pth", _ours())
    assert "stages.0.0.large_kernel.LoRA1.conv.weight" in state
    assert "stages.1.1.large_kernel.LoRA2.bn.running_var" in state
    assert "stages.2.0.large_kernel.small_conv.conv.weight" in state
    assert "downsample_layers.0.0.weight" in state and "downsample_layers.3.1.weight" in state
    assert state["stages.0.0.large_kernel.LoRA1.conv.weight"].shape == (8, 1, 9, 3)


@pytest.mark.parametrize(("key", "prefix"), [("model", ""), ("model_ema", "module.")])
def test_convert_cli_round_trip_gives_the_same_outputs(tmp_path, key, prefix):
    model = _ours()
    path = tmp_path / "checkpoint-best.pth"
    _write_reference(path, model, key=key, prefix=prefix)
    result = CliRunner().invoke(app, ["convert-slak", str(path), "--out", str(tmp_path / "conv"),
                                      *(["--key", key] if key != "model" else [])])  # fmt: skip
    assert result.exit_code == 0, result.output
    converted, meta = load_model(tmp_path / "conv")
    assert meta["model_kwargs"]["kernel_sizes"] == [9, 7, 7, 5] and meta["model_kwargs"]["small_kernel"] == 3
    assert meta["model_kwargs"]["depths"] == [1, 2, 1, 1] and meta["model_kwargs"]["num_classes"] == 7
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(converted(x), model(x), atol=1e-6, rtol=1e-6)
    # a .pth given directly as a teacher is converted on the fly
    teacher, _ = resolve_model(str(path), num_classes=7, in_chans=3)
    torch.testing.assert_close(teacher(x), model(x), atol=1e-6, rtol=1e-6)


def test_reparameterised_reference_checkpoint(tmp_path):
    from vision_kd.models import reparameterize_model

    model = reparameterize_model(_ours())
    _write_reference(tmp_path / "merged.pth", model)
    conv = slak_from_reference(read_reference_state_dict(tmp_path / "merged.pth"))
    assert conv["reparameterized"]
    result = CliRunner().invoke(
        app, ["convert-slak", str(tmp_path / "merged.pth"), "--out", str(tmp_path / "c")]
    )
    assert result.exit_code == 0, result.output
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(load_model(tmp_path / "c")[0](x), model(x), atol=1e-6, rtol=1e-6)


def test_paper_architecture_is_read_from_shapes():
    with torch.device("meta"):
        tiny = timm.create_model("slak_tiny")
    conv = slak_from_reference(_to_reference_layout(tiny.state_dict()))
    kw = conv["model_kwargs"]
    assert conv["model"] == "slak_tiny"
    assert kw["kernel_sizes"] == (51, 49, 47, 13) and kw["small_kernel"] == 5 and kw["decompose"]
    assert kw["dims"] == (124, 249, 499, 998) and kw["depths"] == (3, 3, 9, 3) and kw["patch_size"] == 4


def test_bad_checkpoints_give_clear_errors(tmp_path):
    runner = CliRunner()
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x04not a checkpoint at all" * 10)
    good = tmp_path / "good.pth"
    _write_reference(good, _ours())
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:300])
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "obj": _Arbitrary()}, evil)  # would run code if unpickled
    other = tmp_path / "other.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(2, 2)}}, other)
    cases = {empty: "empty", garbage: "cannot be read safely", truncated: "cannot be read safely",
             evil: "cannot be read safely", other: "not a reference SLaK state dict",
             tmp_path / "missing.pth": "does not exist"}  # fmt: skip
    for path, message in cases.items():
        result = runner.invoke(app, ["convert-slak", str(path), "--out", str(tmp_path / "o")])
        assert result.exit_code == 2, (path, result.output)
        assert message in result.output, (path, result.output)
    with pytest.raises(UserError, match="no model state dict"):
        read_reference_state_dict(good, key="module")
