import json
import pathlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from research_systems_core.checkpoint import CheckpointError, latest_checkpoint
from robust_at import methods as methods_module
from robust_at.attacks import AttackConfig
from robust_at.data import load_dataset
from robust_at.methods import AWP, TRADES, MadryAT
from robust_at.models import create_model
from robust_at.train import TrainingDivergedError, build_config, load_weights, train

torch.set_num_threads(1)

TINY = {
    "dataset": "digits",
    "train_size": 120,
    "val_size": 40,
    "test_size": None,
    "label_noise": 0.2,
    "model": "small-cnn",
    "width": 4,
    "depth": 2,
    "epochs": 3,
    "batch_size": 32,
    "lr": 0.05,
    "weight_decay": 1e-4,
    "milestones": [1],
    "eps": 0.1,
    "step_size": 0.05,
    "attack_steps": 2,
    "eval_steps": 2,
    "eval_size": 60,
    "swa": True,
    "wot": {"enabled": True, "gap": 2, "num_gaps": 2, "passes": 1, "bn_batches": 2, "start_epoch": 0},
}


def _data(cfg):
    return load_dataset(
        cfg.dataset,
        val_size=cfg.val_size,
        train_size=cfg.train_size,
        label_noise=cfg.label_noise,
        seed=cfg.seed,
    )


def _strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows]


def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path: pathlib.Path) -> None:
    cfg = build_config(None, TINY)
    full = train(cfg, tmp_path / "full", data=_data(cfg))
    assert full["wot"]["refinements"] >= 2
    stopped = train(cfg, tmp_path / "resumed", data=_data(cfg), stop_after_epoch=0)
    assert stopped == {"stopped_after_epoch": 0}
    resumed = train(cfg, tmp_path / "resumed", data=_data(cfg))
    for name in ("model_last", "model_best_val", "model_swa"):
        a = load_weights(tmp_path / "full" / f"{name}.safetensors")
        b = load_weights(tmp_path / "resumed" / f"{name}.safetensors")
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    rows_full = [json.loads(line) for line in (tmp_path / "full" / "history.jsonl").read_text().splitlines()]
    rows_resumed = [
        json.loads(line) for line in (tmp_path / "resumed" / "history.jsonl").read_text().splitlines()
    ]
    assert _strip(rows_full) == _strip(rows_resumed)
    assert full["wot"]["history"] == resumed["wot"]["history"]
    assert (tmp_path / "full" / "curves.png").stat().st_size > 1000


def test_wot_run_forked_from_a_plain_run_before_wot_starts_equals_a_fresh_wot_run(tmp_path) -> None:
    """The reproduction continues its WOT runs from the AT run's checkpoint at the decay."""
    import shutil

    # the plain run has SWA from the decay (epoch 1): forks are taken before it (SWA's evaluation
    # draws PGD random starts from the global generator)
    wot_cfg = build_config(None, {**TINY, "swa": False, "wot": {**TINY["wot"], "start_epoch": 1}})
    at_cfg = build_config(None, {**TINY, "wot": {"enabled": False}})
    train(wot_cfg, tmp_path / "fresh", data=_data(wot_cfg))
    train(at_cfg, tmp_path / "at", data=_data(at_cfg), stop_after_epoch=0)
    shutil.copytree(tmp_path / "at" / "checkpoints", tmp_path / "forked" / "checkpoints")
    forked = train(wot_cfg, tmp_path / "forked", data=_data(wot_cfg))
    assert forked["wot"]["refinements"] >= 1
    a = load_weights(tmp_path / "fresh" / "model_last.safetensors")
    b = load_weights(tmp_path / "forked" / "model_last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # but a plain checkpoint from after WOT's start is refused (WOT would silently never run)
    late = build_config(None, {**TINY, "swa": False, "wot": {**TINY["wot"], "start_epoch": 0}})
    shutil.copytree(tmp_path / "at" / "checkpoints", tmp_path / "late" / "checkpoints")
    with pytest.raises(CheckpointError, match="has no WOT state"):
        train(late, tmp_path / "late", data=_data(late))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, monkeypatch) -> None:
    cfg = build_config(None, {**TINY, "swa": False, "wot": {"enabled": False}})
    original = MadryAT.loss

    def poisoned(self, model, x, y, epoch):
        loss, logits = original(self, model, x, y, epoch)
        return (loss * float("nan") if epoch == 1 else loss), logits

    monkeypatch.setattr(MadryAT, "loss", poisoned)
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at epoch 1, batch 0 .*ckpt-000000000"):
        train(cfg, tmp_path, data=_data(cfg))
    assert latest_checkpoint(tmp_path / "checkpoints").name == "ckpt-000000000.safetensors"


def test_wot_without_validation_split_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"val_size must be > 0 when WOT is on"):
        build_config(None, {**TINY, "val_size": 0})


def test_bad_config_values_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"eps must be >= 0, got -0\.1"):
        build_config(None, {**TINY, "eps": -0.1})
    with pytest.raises(ValueError, match="method"):
        build_config(None, {**TINY, "method": "mart"})
    with pytest.raises(ValueError, match=r"unknown config key 'wot\.gaps'"):
        build_config(None, {**TINY, "wot": {"gaps": 3}})


def test_model_with_wrong_output_shape_is_rejected(tmp_path, monkeypatch) -> None:
    cfg = build_config(None, {**TINY, "wot": {"enabled": False}})

    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(64, 7)

        def forward(self, x):
            return self.lin(x.flatten(1))

    monkeypatch.setattr("robust_at.train.build_model", lambda cfg, data: Bad())
    with pytest.raises(ValueError, match="returns 7 logits per input but the data has 10 classes"):
        train(cfg, tmp_path, data=_data(cfg))


def _batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)


def test_trades_with_beta_zero_is_clean_cross_entropy() -> None:
    torch.manual_seed(0)
    model = create_model("small-cnn", 10, 1, width=4, depth=2)
    x, y = _batch()
    loss, _ = TRADES(AttackConfig(eps=0.1, step_size=0.05, steps=2), beta=0.0).loss(model, x, y, 0)
    assert torch.allclose(loss.detach(), F.cross_entropy(model(x), y).detach())
    loss6, _ = TRADES(AttackConfig(eps=0.1, step_size=0.05, steps=2), beta=6.0).loss(model, x, y, 0)
    assert loss6.item() > loss.item()  # the KL term is positive


def test_awp_perturbs_weights_by_gamma_times_their_norm_and_restores_them() -> None:
    torch.manual_seed(0)
    model = create_model("small-cnn", 10, 1, width=4, depth=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method = AWP(AttackConfig(eps=0.1, step_size=0.05, steps=2), gamma=0.01)
    x, y = _batch()
    loss, _ = method.loss(model, x, y, epoch=0)
    assert torch.isfinite(loss)
    w = model.stem[0].weight
    moved = (w.detach() - before["stem.0.weight"]).norm() / before["stem.0.weight"].norm()
    assert abs(float(moved) - 0.01) < 1e-5  # ||gamma * ||w|| g/||g|| || = gamma ||w||
    method.after_step(model)
    after = model.state_dict()
    for k in before:
        if "running" in k or "num_batches" in k:
            continue
        assert torch.allclose(after[k], before[k], atol=1e-7), k


def test_registered_methods() -> None:
    assert set(methods_module.METHODS.names()) == {"at-pgd", "trades", "awp"}
