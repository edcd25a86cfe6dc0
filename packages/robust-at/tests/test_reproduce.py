import json

import pytest

from robust_at import reproduce as repro

pytest.importorskip("pyautoattack")


def test_reproduce_writes_a_complete_summary_last(tmp_path, monkeypatch) -> None:
    tiny = repro.ReproConfig(
        seeds=[0],
        epochs=2,
        milestone=1,
        width=4,
        eval_steps=1,
        final_steps=2,
        autoattack_n=4,
        eval_size=40,
        final_n=40,
        train_size=64,
        batch_size=128,
        wot_passes=10,
    )
    monkeypatch.setattr(repro, "QUICK", tiny)
    summary = repro.reproduce(tmp_path, quick=True)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["verdict"] == summary["verdict"]
    assert summary["verdict"] in ("reproduced", "partly", "not reproduced at this scale")
    for key in ("paper", "claim", "verdict_reason", "table", "seeds", "pngs"):
        assert key in summary
    assert [r["method"] for r in summary["table"]] == list(repro.ARMS)
    for row in summary["table"]:
        assert 0.0 <= row["pgd_mean"] <= row["clean_mean"] + 1e-9
        if row["method"] not in repro.AUTOATTACK_ARMS:
            assert row["autoattack_mean"] is None
        else:
            assert 0.0 <= row["autoattack_mean"] <= row["pgd_mean"] + 0.5
    # the WOT runs use the reference's options with the step counts scaled to the tiny data set
    wot = summary["setting"]["wot"]
    assert (wot["passes"], wot["lr"], wot["num_gaps"], wot["momentum_per_tensor"]) == (10, 0.1, 4, True)
    assert wot["gap"] == wot["bn_batches"] == 1  # ceil(64 / 128): one step per epoch
    for png in summary["pngs"]:
        assert (tmp_path / png).stat().st_size > 1000
    # a rerun reuses the finished runs and their evaluation
    again = repro.reproduce(tmp_path, quick=True)
    assert again["table"] == summary["table"]
