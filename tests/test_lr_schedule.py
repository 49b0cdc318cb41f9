"""Warmup + decay learning-rate schedule and AdamW parameter groups."""
import math

import pytest
import torch

from trainer.lr_schedule import WarmupDecaySchedule
from trainer.options import TrainerOptions
from trainer.trainer_egoclip import build_param_groups


def lrs(decay, steps=12, warmup=2, min_ratio=0.1):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupDecaySchedule(opt, total_steps=10, warmup_steps=warmup, decay=decay, min_lr_ratio=min_ratio)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine():
    values = lrs("cosine")
    assert values[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert values[6] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert values[10:] == pytest.approx([0.1, 0.1])


def test_linear_and_constant():
    assert lrs("linear")[6] == pytest.approx(0.1 + 0.9 * (1 - 4 / 8))
    assert lrs("constant")[2:] == pytest.approx([1.0] * 10)
    with pytest.raises(ValueError, match="decay must be"):
        lrs("step")


def test_param_groups_split_new_norm_and_bias():
    model = torch.nn.Module()
    model.proj = torch.nn.Linear(4, 4)
    model.norm = torch.nn.LayerNorm(4)
    model.fusion_logits = torch.nn.Parameter(torch.zeros(3))
    opts = TrainerOptions(new_param_lr_scale=10.0)
    groups = {g["name"]: g for g in build_param_groups(model, base_lr=1e-4, weight_decay=0.05, options=opts)}
    assert [p.shape for p in groups["decay"]["params"]] == [torch.Size([4, 4])]
    assert len(groups["no_decay"]["params"]) == 3 and groups["no_decay"]["weight_decay"] == 0.0
    assert groups["new"]["params"][0] is model.fusion_logits and groups["new"]["lr"] == pytest.approx(1e-3)


def test_frozen_parameters_leave_the_optimizer_and_a_typo_is_an_error():
    from trainer.param_groups import freeze_parameters
    model = torch.nn.Module()
    model.text = torch.nn.Linear(4, 4)
    model.video = torch.nn.Linear(4, 2)
    assert freeze_parameters(model, ["text."]) == 20
    assert not model.text.weight.requires_grad and model.video.weight.requires_grad
    groups = build_param_groups(model, base_lr=1e-4, weight_decay=0.05, options=TrainerOptions())
    trained = [p for g in groups for p in g["params"]]
    assert len(trained) == 2 and all(p.requires_grad for p in trained)
    with pytest.raises(ValueError, match="'txt' matches no parameter"):
        freeze_parameters(model, ["txt"])
