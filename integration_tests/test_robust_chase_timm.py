"""Pipeline 1 (issue 25): one generated image folder through the shared image stack: a timm
ResNet (resnet10t) adversarially trained by robust-at's public ``train``, then Chase-slimmed by
sparse-dst (coupled channel groups traced through the residual streams), fine-tuning on PGD
examples from robust-at's attack.

Checked: the slim model makes the same predictions as the masked one on clean and on adversarial
inputs, so its clean and PGD accuracies are equal; it has fewer parameters and MACs; the channel
count follows Chase's schedule."""

from __future__ import annotations

import pathlib

import torch
import torch.nn.functional as F

from research_systems_core.vision import make_image_folder
from robust_at.attacks import pgd
from robust_at.data import batches, load_dataset
from robust_at.evaluate import clean_accuracy, pgd_accuracy
from robust_at.train import TrainConfig, build_model, load_state_into, load_weights, train
from sparse_dst import Chase, ChaseConfig
from sparse_dst.surgery import conv_linear_macs, count_parameters

TRAIN_EPS, TRAIN_STEP = 16 / 255, 6 / 255
EPS, STEP = 0.3, 0.075  # evaluation: a larger budget than in training, so that PGD flips some images
CHANNEL_SPARSITY = 0.3


def _adversarial_train(folder: pathlib.Path, out: pathlib.Path) -> TrainConfig:
    cfg = TrainConfig(
        dataset=f"folder:{folder}", image_size=32, val_size=6, model="timm:resnet10t", method="at-pgd",
        epochs=3, batch_size=16, lr=0.05, milestones=[], weight_decay=0.0, eps=TRAIN_EPS, step_size=TRAIN_STEP,
        attack_steps=2, eval_steps=3, device="cpu", seed=0,
    )  # fmt: skip
    result = train(cfg, out)
    assert result["epochs_run"] == 3 and pathlib.Path(result["weights"]["last"]).is_file()
    return cfg


def _chase_finetune(model: torch.nn.Module, data, steps: int) -> Chase:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    config = ChaseConfig(
        density=0.6, update_frequency=4, channel_sparsity=CHANNEL_SPARSITY, channel_interval=2,
        channel_end_fraction=0.5, beta=0.5, seed=0,
    )  # fmt: skip
    example = batches(data.x_train, data.y_train, 2).__next__()[0]
    chase = Chase(model, optimizer, config, total_steps=steps, example_input=example)
    gen = torch.Generator().manual_seed(0)
    step = 0
    while step < steps:
        for x, y in batches(data.x_train, data.y_train, 16, shuffle=True, generator=gen):
            if step == steps:
                break
            x_adv = pgd(model, x, y, eps=TRAIN_EPS, step_size=TRAIN_STEP, steps=2)
            model.train()
            loss = F.cross_entropy(model(x_adv), y)
            optimizer.zero_grad()
            loss.backward()
            chase.step()
            step += 1
    model.eval()
    return chase


def _predictions(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def test_adversarially_trained_timm_resnet_chase_slimmed(tmp_path: pathlib.Path) -> None:
    folder = make_image_folder(tmp_path / "images", classes=3, per_class=16, size=32, seed=0)
    cfg = _adversarial_train(folder, tmp_path / "at")
    data = load_dataset(f"folder:{folder}", val_size=6, seed=0, image_size=32)
    assert data.num_classes == 3 and tuple(data.x_test.shape[1:]) == (3, 32, 32)
    model = build_model(cfg, data)
    load_state_into(model, load_weights(tmp_path / "at" / "model_last.safetensors"), "model_last")
    model.eval()
    trained_clean = clean_accuracy(model, data.x_test, data.y_test)["acc"]
    assert trained_clean > 0.5, trained_clean  # 3 classes: chance is 1/3

    chase = _chase_finetune(model, data, steps=12)
    # resnet10t: 6 inner convs + 4 residual streams, each tying two producers (the stem's last conv
    # with layer1's conv2; conv2 with the downsample conv in layers 2-4); fc reaches the output.
    coupled = [g for g in chase.groups if len(g.producers) == 2]
    assert len(chase.groups) == 10 and len(coupled) == 4 and "model.fc" in chase.skipped
    target = round(chase.baseline_channels * (1 - CHANNEL_SPARSITY))
    assert chase.alive_channels() == target, (chase.alive_channels(), target, chase.baseline_channels)
    x_test, y_test = next(batches(data.x_test, data.y_test, len(data.y_test)))

    torch.manual_seed(1)
    masked_pgd = pgd_accuracy(model, data.x_test, data.y_test, eps=EPS, step_size=STEP, steps=5)["acc"]
    masked_clean = clean_accuracy(model, data.x_test, data.y_test)["acc"]
    torch.manual_seed(2)
    x_adv = pgd(model, x_test, y_test, eps=EPS, step_size=STEP, steps=5)
    masked_macs, masked_params = conv_linear_macs(model, x_test[:1]), count_parameters(model)
    masked_clean_pred, masked_adv_pred = _predictions(model, x_test), _predictions(model, x_adv)

    slim = chase.finalize()
    slim.eval()
    assert chase.equivalence_error <= 1e-4
    # Same predictions on clean and on (fixed) adversarial inputs, hence equal accuracies.
    assert torch.equal(_predictions(slim, x_test), masked_clean_pred)
    assert torch.equal(_predictions(slim, x_adv), masked_adv_pred)
    assert clean_accuracy(slim, data.x_test, data.y_test)["acc"] == masked_clean
    torch.manual_seed(1)
    slim_pgd = pgd_accuracy(slim, data.x_test, data.y_test, eps=EPS, step_size=STEP, steps=5)["acc"]
    assert slim_pgd == masked_pgd, (slim_pgd, masked_pgd)
    assert 0 < masked_pgd < masked_clean  # the attack flips some images, not all
    # Coupled producers are sliced alike, and the residual streams did shed channels.
    modules = dict(slim.named_modules())
    widths = [{modules[p].out_channels for p in g.producers} for g in coupled]
    assert all(len(w) == 1 for w in widths), widths
    assert sum(w.pop() for w in widths) < sum(g.size for g in coupled)
    # Genuinely smaller: fewer parameters and multiply-accumulates.
    slim_macs, slim_params = conv_linear_macs(slim, x_test[:1]), count_parameters(slim)
    print({"trained_clean": trained_clean, "masked_clean": masked_clean, "masked_pgd": masked_pgd,
           "params": (masked_params, slim_params), "macs": (masked_macs, slim_macs),
           "channels": (chase.baseline_channels, chase.alive_channels())})  # fmt: skip
    assert slim_params < 0.9 * masked_params
    assert slim_macs < 0.9 * masked_macs
    assert chase.slim_masks.n_active <= chase.budget
