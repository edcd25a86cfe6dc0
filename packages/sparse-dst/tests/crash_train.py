"""Subprocess helper of test_crash.py: one Chase training run on digits with checkpoints."""

import pathlib
import sys

import torch
from safetensors.torch import save_file


def run(out: str, epochs: int) -> None:
    from sparse_dst.data import load_data
    from sparse_dst.train import TrainConfig, train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig(
            method="chase", dataset="digits", epochs=epochs, width=0.25, batch_size=256, device="cpu"
        )
        cfg.sparse.update_frequency = 2
        cfg.sparse.channel_interval = 3
        cfg.sparse.memory_bound = True
        cfg.sparse.prune = "global"
        cfg.sparse.memory_bound_end_fraction = 0.5
        result = train(cfg, load_data("digits"), checkpoint_dir=out, resume=True)
        pathlib.Path(out).mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in result.model.state_dict().items()}, f"{out}/final.safetensors"
        )
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]))
    print("done", flush=True)
