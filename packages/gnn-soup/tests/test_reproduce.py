import json

from gnn_soup.executors import SequentialExecutor
from gnn_soup.reproduce import ReproduceConfig, reproduce
from gnn_soup.training import TrainConfig


def test_tiny_reproduction_writes_summary_last_and_resumes(tmp_path) -> None:
    config = ReproduceConfig(
        dataset="synthetic",
        seeds=[0, 1],
        num_ingredients=2,
        samplers=["full", "neighbor"],
        train=TrainConfig(hidden_dim=8, steps=10, eval_every=5),
        grid=3,
        per_sampler=False,
    )
    summary = reproduce(tmp_path, SequentialExecutor(), config=config)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["verdict"] in ("reproduced", "partly reproduced", "not reproduced at this scale")
    for key in ("paper", "claim", "verdict_reason", "table", "seeds", "pngs"):
        assert key in on_disk
    assert on_disk["seeds"] == [0, 1]
    assert len(on_disk["table"]) == 12  # 2 inits x 6 methods
    for png in on_disk["pngs"]:
        assert (tmp_path / png).stat().st_size > 1000
    newest = max(p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file())
    assert (tmp_path / "summary.json").stat().st_mtime_ns == newest  # written last
    # rerun: every ingredient is already stored, the numbers are the same
    again = reproduce(tmp_path, SequentialExecutor(), config=config)
    assert again["table"] == summary["table"]
