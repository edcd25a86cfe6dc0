import dataclasses
import itertools

import pytest
import torch
from torch.utils.data import Subset

from vision_kd.data import load_data
from vision_kd.losses import create_loss
from vision_kd.models import create_model
from vision_kd.sparse import SparseConfig
from vision_kd.train import TrainConfig, cache_teacher_outputs, check_cache_exact, evaluate, lr_at, train


@pytest.fixture(scope="module")
def digits():
    data = load_data("digits")
    return dataclasses.replace(data, train=Subset(data.train, range(256)), val=Subset(data.val, range(128)))


def _student(seed=0):
    torch.manual_seed(seed)
    return create_model("kd_resnet_micro", in_chans=1, num_classes=10, channels=(16, 16, 16, 16))


def _teacher():
    torch.manual_seed(1)
    return create_model("slak_pico", in_chans=1, num_classes=10, patch_size=1, kernel_sizes=(5, 3, 3, 3))


def _cfg(**kw):
    return TrainConfig(**{"epochs": 1, "batch_size": 64, "lr": 1e-2, "device": "cpu", **kw})


def test_teacher_gets_no_gradient_and_never_changes(digits):
    teacher = _teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.train()  # train() must freeze it anyway
    student = _student()
    s_before = [p.clone() for p in student.parameters()]
    loss = create_loss("fd", student_channels=16, teacher_channels=32)
    train(
        student,
        digits,
        _cfg(),
        loss,
        teacher=teacher,
        student_tap=2,
        teacher_tap=1,
        evaluate_each_epoch=False,
    )
    assert not teacher.training
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k  # BN running stats too
    assert any(not torch.equal(a, b) for a, b in zip(s_before, student.parameters(), strict=True))


def test_cached_teacher_logits_give_the_same_training(digits):
    teacher = _teacher()
    a, b = _student(), _student()
    train(a, digits, _cfg(), create_loss("kd"), teacher=teacher, evaluate_each_epoch=False)
    cache = cache_teacher_outputs(teacher, digits)
    # keyed by sample index: row i is the teacher's output for training sample i
    x5 = torch.stack([digits.train[i][0] for i in (5, 17)])
    with torch.no_grad():
        direct = teacher((x5 - 0.5) / 0.5)
    torch.testing.assert_close(cache.logits[[5, 17]], direct)
    train(b, digits, _cfg(), create_loss("kd"), teacher_cache=cache, evaluate_each_epoch=False)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4)


def test_caching_is_refused_where_it_is_not_exact(digits):
    check_cache_exact(False, _cfg())
    with pytest.raises(ValueError, match="random augmentation"):
        check_cache_exact(True, _cfg())
    with pytest.raises(ValueError, match="mixup"):
        check_cache_exact(False, _cfg(mixup=0.8))
    cache = cache_teacher_outputs(_teacher(), digits)
    with pytest.raises(ValueError, match="mixup/cutmix"):
        train(_student(), digits, _cfg(cutmix=1.0), create_loss("kd"), teacher_cache=cache)


def test_mixup_cutmix_and_smoothing_train(digits):
    student = _student()
    out = train(student, digits, _cfg(mixup=0.8, cutmix=1.0, label_smoothing=0.1), create_loss("kd"),
                teacher=_teacher())  # fmt: skip
    assert 0.0 <= out["test_acc"] <= 1.0 and out["precision"] == "fp32" and out["device"] == "cpu"


def test_resume_continues_exactly(digits, tmp_path):
    cfg = _cfg(epochs=3, lr=5e-3, ema_decay=0.9)

    def mgd():
        return create_loss("mgd", student_channels=16, teacher_channels=32, alpha_mgd=1e-3)

    full = _student()
    result = train(full, digits, cfg, mgd(), teacher=_teacher(), student_tap=2, teacher_tap=1)

    class Stop(Exception):
        pass

    def stop_after_first(row):
        if row["epoch"] == 1:
            raise Stop

    torch.manual_seed(0)
    with pytest.raises(Stop):
        train(_student(), digits, cfg, mgd(), teacher=_teacher(), student_tap=2, teacher_tap=1,
              checkpoint_dir=tmp_path, on_epoch=stop_after_first)  # fmt: skip
    resumed = _student()
    out = train(
        resumed, digits, cfg, mgd(), teacher=_teacher(), student_tap=2, teacher_tap=1, checkpoint_dir=tmp_path
    )
    assert [r["epoch"] for r in out["history"]] == [1, 2, 3]
    for pa, pb in zip(full.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert out["test_acc_ema"] == result["test_acc_ema"]


def test_sparse_training_keeps_sparsity_and_resumes_exactly(digits, tmp_path):
    sparse = SparseConfig(sparsity=0.5, init="snip", update_frequency=2, prune_rate=0.5)
    cfg = _cfg(epochs=2)
    full = _teacher()
    out = train(full, digits, cfg, sparse=sparse, evaluate_each_epoch=False)
    assert out["sparsity"] == pytest.approx(0.5, abs=0.01)

    class Stop(Exception):
        pass

    def stop(row):
        raise Stop

    with pytest.raises(Stop):
        train(
            _teacher(),
            digits,
            cfg,
            sparse=sparse,
            checkpoint_dir=tmp_path,
            on_epoch=stop,
            evaluate_each_epoch=False,
        )
    resumed = _teacher()
    train(resumed, digits, cfg, sparse=sparse, checkpoint_dir=tmp_path, evaluate_each_epoch=False)
    for (name, pa), pb in zip(full.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(pa, pb), name


def test_bad_inputs(digits):
    teacher = create_model("kd_resnet_micro", in_chans=1, num_classes=5)
    with pytest.raises(ValueError, match="teacher has 5 classes but the student has 10"):
        train(_student(), digits, _cfg(), create_loss("kd"), teacher=teacher)
    with pytest.raises(ValueError, match="needs a teacher"):
        train(_student(), digits, _cfg(), create_loss("kd"))
    with pytest.raises(ValueError, match="lr must be > 0"):
        train(_student(), digits, _cfg(lr=0.0))
    with pytest.raises(ValueError, match="precision"):
        train(_student(), digits, _cfg(precision="fp8"))
    with pytest.raises(ValueError, match="CUDA is not available"):
        train(_student(), digits, _cfg(device="cuda:3"))
    with pytest.raises(ValueError, match="needs student_tap"):
        train(
            _student(),
            digits,
            _cfg(),
            create_loss("fd", student_channels=16, teacher_channels=8),
            teacher=_teacher(),
        )


def test_bf16_autocast_runs_on_cpu(digits):
    out = train(_student(), digits, _cfg(precision="bf16"), evaluate_each_epoch=False)
    assert out["precision"] == "bf16" and out["test_acc"] is None and out["history"][0]["loss"] > 0


def test_lr_schedule_shape():
    cfg = TrainConfig(lr=1.0, min_lr=0.0, warmup_frac=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] < 0.01
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))


def test_student_learns_digits(digits):
    student = _student()
    acc0 = evaluate(student, digits)
    train(student, digits, _cfg(epochs=6, batch_size=32), evaluate_each_epoch=False)
    assert evaluate(student, digits) > max(0.5, acc0 + 0.3)
