"""Checkpoints: atomic, verified, resumable, RNG-exact; never pickle."""

from __future__ import annotations

import json
import pathlib
import random

import numpy as np
import pytest
import torch

from research_systems_core.checkpoint import (
    CheckpointError,
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def test_roundtrip_torch_and_numpy(tmp_path: pathlib.Path) -> None:
    w = torch.randn(3, 4)
    tied = {"emb": w, "head": w, "step_count": torch.tensor(5)}  # shared storage is handled
    path = save_checkpoint(tmp_path, 10, tied, {"lr": 0.1, "metrics": {"acc": np.float32(0.5)}})
    assert path.name == "ckpt-000000010.safetensors"
    tensors, meta = load_checkpoint(path)
    assert torch.equal(tensors["emb"], w) and torch.equal(tensors["head"], w)
    assert meta == {"lr": 0.1, "metrics": {"acc": 0.5}, "step": 10}
    save_checkpoint(tmp_path, 11, {"a": np.arange(4.0)}, {})
    arrays, _ = load_checkpoint(tmp_path / "ckpt-000000011.json", framework="np")
    np.testing.assert_array_equal(arrays["a"], np.arange(4.0))


def test_truncated_by_one_byte_is_refused(tmp_path: pathlib.Path) -> None:
    path = save_checkpoint(tmp_path, 1, {"w": torch.randn(8, 8)}, {})
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CheckpointError, match="truncated or altered"):
        load_checkpoint(path)


def test_tampered_byte_is_refused(tmp_path: pathlib.Path) -> None:
    path = save_checkpoint(tmp_path, 1, {"w": torch.zeros(8, 8)}, {})
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_checkpoint(path)


def test_missing_sidecar_means_incomplete(tmp_path: pathlib.Path) -> None:
    path = save_checkpoint(tmp_path, 1, {"w": torch.zeros(2)}, {})
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_checkpoint(path)
    assert latest_checkpoint(tmp_path) is None


def test_latest_skips_a_corrupt_newer_checkpoint(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, {"w": torch.full((4,), float(step))}, {})
    newest = tmp_path / "ckpt-000000003.safetensors"
    newest.write_bytes(newest.read_bytes()[:-1])
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and latest.name == "ckpt-000000002.safetensors"
    assert "skipping checkpoint" in caplog.text
    assert latest_checkpoint(tmp_path / "none") is None


def test_keep_prunes_old_checkpoints(tmp_path: pathlib.Path) -> None:
    for step in range(5):
        save_checkpoint(tmp_path, step, {"w": torch.zeros(1)}, {}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["ckpt-000000003.json", "ckpt-000000004.json"]
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    assert not list(tmp_path.glob(".*tmp"))


def test_sidecar_is_plain_json_no_pickle(tmp_path: pathlib.Path) -> None:
    path = save_checkpoint(tmp_path, 0, {"w": torch.zeros(1)}, {"config": {"a": [1, 2]}})
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["format"] == "research-systems-core-checkpoint/1" and record["meta"]["config"] == {
        "a": [1, 2]
    }


def test_rng_state_roundtrip_through_a_checkpoint(tmp_path: pathlib.Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    tensors, meta = capture_rng_state()
    path = save_checkpoint(tmp_path, 0, tensors, meta)
    expected = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(*load_checkpoint(path))
    got = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])
    with pytest.raises(CheckpointError, match="no RNG state"):
        restore_rng_state({}, {})


def test_bad_step(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="step must be a non-negative integer"):
        save_checkpoint(tmp_path, -1, {}, {})
