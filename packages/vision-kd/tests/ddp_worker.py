"""Run by test_ddp.py under torchrun: FD distillation of a SLaK-sparse (SNIP) student on 2 CPU ranks,
then compare weights across ranks (SNIP scores differ per rank; rank 0's densities must be used)."""

import dataclasses
import sys

import torch
import torch.distributed as dist
from torch.utils.data import Subset

from vision_kd.data import load_data
from vision_kd.losses import create_loss
from vision_kd.models import create_model
from vision_kd.sparse import SparseConfig
from vision_kd.train import TrainConfig, train

torch.set_num_threads(1)
data = load_data("digits")
data = dataclasses.replace(data, train=Subset(data.train, range(64)), val=Subset(data.val, range(32)))
torch.manual_seed(0)
student = create_model("kd_resnet_micro", in_chans=1, num_classes=10, channels=(8, 8, 8, 8))
torch.manual_seed(1)
teacher = create_model("slak_pico", in_chans=1, num_classes=10, patch_size=1, kernel_sizes=(5, 3, 3, 3))
loss = create_loss("fd", student_channels=8, teacher_channels=32)
train(
    student,
    data,
    TrainConfig(epochs=1, batch_size=16, lr=1e-2, device="cpu"),
    loss,
    teacher=teacher,
    student_tap=2,
    teacher_tap=1,
    sparse=SparseConfig(sparsity=0.5, init="snip", update_frequency=1),
)
flat = torch.cat([p.detach().flatten() for p in list(student.parameters()) + list(loss.parameters())])
gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
same = all(torch.allclose(gathered[0], g) for g in gathered[1:])
if dist.get_rank() == 0:
    with open(sys.argv[1], "w") as handle:
        handle.write(f"{int(same)} {dist.get_world_size()}")
dist.destroy_process_group()
