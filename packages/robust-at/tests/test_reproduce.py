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
        assert 0.0 <= row["autoattack_mean"] <= 1.0
    for png in summary["pngs"]:
        assert (tmp_path / png).stat().st_size > 1000
    # a rerun reuses the finished runs and their evaluation
    again = repro.reproduce(tmp_path, quick=True)
    assert again["table"] == summary["table"]
