"""Alignment model, progress, metrics and task: MCN fusion, progress head and targets, closed-form metrics, the
gradient-rescale hook, a short learning check and a run of a shipped config through the engine."""
import copy
import glob
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from model.losses.alignment.tcc import TCCLoss
from model.losses.progress import BIN_EDGES, sample_progress_targets, sample_segment_ends, weighted_l1_progress
from model.metrics.alignment import (enclosed_area_error, kendalls_tau, kendalls_tau_wild, phase_classification)
from model.metrics.progress import (action_progress, online_progress_error, path_length, video_progress)
from model.progress import ProgressHead, with_position_channel
from model.sequence_encoders import AlignmentEncoder, MultiHeadFusion
from tests.alignment_fixtures import line, tiny_procedural
from trainer import launch
from trainer.tasks.alignment import TemporalAlignment
from trainer.tasks.base import StepContext
from utils.config import ConfigParser
from utils.config_files import load_config_file

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64


# ----------------------------------------------------------------------------- model
def test_mcn_fusion_weights_single_head_and_deterministic_order():
    torch.manual_seed(0)
    fusion = MultiHeadFusion(6, 3, head_hidden=[5], attention_hidden=[7])
    x = torch.randn(9, 6)
    fused, weights = fusion(x)
    assert fused.shape == (9, 6) and torch.allclose(weights.sum(1), torch.ones(9))
    single = MultiHeadFusion(6, 1, head_hidden=[5], attention_hidden=[7])
    assert torch.allclose(single(x)[0], single.heads[0](x))
    torch.manual_seed(1)
    first = AlignmentEncoder(6, 4, encoder="stacking", num_layers=2, num_heads=3, head_hidden=[5],
                             attention_hidden=[7], drop_context=True, context_hidden=[5])
    torch.manual_seed(1)
    second = AlignmentEncoder(6, 4, encoder="stacking", num_layers=2, num_heads=3, head_hidden=[5],
                              attention_hidden=[7], drop_context=True, context_hidden=[5])
    assert list(first.state_dict()) == list(second.state_dict())
    a, b = first([x]), second([x])
    assert torch.equal(a["embeddings"][0], b["embeddings"][0]) and a["contexts"][0].shape == (5,)
    context = a["contexts"][0]                      # the drop probability starts at initial_drop (0.02) everywhere
    assert torch.allclose(torch.sigmoid(a["embeddings"][0] @ context[:-1] + context[-1]), torch.tensor(0.02))


def test_progress_head_range_and_position_channel():
    head = ProgressHead(4, hidden=6, mlp_hidden=3)
    out = head([torch.randn(1, 4), torch.randn(7, 4), torch.randn(3, 4)])
    assert out.shape == (3,) and ((out > 0) & (out < 1)).all()
    assert torch.equal(with_position_channel(torch.zeros(4, 2))[:, -1], torch.tensor([0, 0.25, 0.5, 0.75]))
    alone = head([torch.ones(3, 4)])                # padding in a batch does not change a segment's output
    assert torch.allclose(head([torch.ones(3, 4), torch.randn(8, 4)])[0], alone[0])


# ----------------------------------------------------------------------------- progress targets and loss
def test_weighted_l1_closed_form():
    loss = weighted_l1_progress(torch.tensor([0.2, 0.5, 0.9], dtype=F64), torch.tensor([0.1, 0.5, 1.0], dtype=F64))
    assert loss.item() == pytest.approx(1.1 / 13, rel=1e-12)


def test_progress_targets_lie_in_their_action_and_stratified_draws_hit_every_bin():
    generator = torch.Generator().manual_seed(0)
    targets = sample_progress_targets([(3, 12), (20, 21), (30, 36)], samples_per_video=20, generator=generator)
    assert len(targets) == 100
    for t in targets:
        assert (t.start, t.start + 2) <= (t.start, t.end)
        length = {3: 10, 30: 7}[t.start]                # the 2-frame action is too short
        assert t.end <= t.start + length - 1 and t.progress == pytest.approx((t.end - t.start + 1) / length)
    edges = torch.tensor(BIN_EDGES, dtype=F64)
    bins = lambda draw: set(torch.bucketize(torch.tensor([t.progress for t in draw], dtype=F64), edges).tolist())  # noqa: E731
    assert all(bins(sample_segment_ends(0, 9, 5, 2, True, generator)) == {0, 1, 2} for _ in range(200))
    assert any(bins(sample_segment_ends(0, 9, 5, 2, False, generator)) != {0, 1, 2} for _ in range(200))


# ----------------------------------------------------------------------------- metrics
def test_kendalls_tau_identical_reversed_and_in_the_wild():
    u = line(12, seed=1)
    assert kendalls_tau(u, u) == pytest.approx(1.0) and kendalls_tau(u, u.flip(0)) == pytest.approx(-1.0)
    labels = np.repeat([1, 2, 3], 4)
    assert kendalls_tau_wild(u, u, labels, labels) == pytest.approx(kendalls_tau(u, u))
    assert kendalls_tau_wild(u, u.flip(0), labels, labels[::-1]) == pytest.approx(-1.0)
    assert enclosed_area_error(u, u, labels, labels) == 0.0
    assert enclosed_area_error(u, u.flip(0), labels, labels) > 0.3


def test_online_progress_error_is_zero_for_constant_speed_lines_and_flat_over_background():
    segments, length = [(2, 6), (9, 13)], 16
    truth = video_progress(segments, length)
    assert truth[:3].tolist() == [0, 0, 0] and truth[6:9].tolist() == [0.5] * 3 and truth[13:].tolist() == [1.0] * 3
    # constant speed inside actions, still over background: geodesic progress / its own length is exact
    steps = np.zeros((length, 3))
    for start, end in segments:
        steps[start + 1:end + 1, 0] = 1.0
    embeddings = np.cumsum(steps, axis=0)
    assert online_progress_error(path_length(embeddings) / path_length(embeddings)[-1], truth) == 0.0
    target = action_progress(segments, length)
    assert np.isnan(target[7]) and target[2] == pytest.approx(0.2)
    assert online_progress_error(np.full(length, 0.5), target) == pytest.approx(np.mean(np.abs(0.5 - target[~np.isnan(target)])))


def test_phase_classification_separable_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 5)) * 10
    labels = [np.repeat([0, 1, 2], 5) for _ in range(4)]
    embeddings = [centres[y] + rng.normal(size=(15, 5)) * 0.1 for y in labels]
    accuracy = phase_classification(embeddings[:3], labels[:3], embeddings[3:], labels[3:])
    assert accuracy[1.0] == 1.0
    from model.metrics.alignment import few_shot_classification
    few = few_shot_classification(embeddings[:3], labels[:3], embeddings[3:], labels[3:], shots=(1, 2), episodes=3)
    assert few == {1: (1.0, 0.0), 2: (1.0, 0.0)}


# ----------------------------------------------------------------------------- the gradient-rescale hook
class ZeroAlignment(torch.nn.Module):
    def forward(self, embeddings, contexts=None, step=0, epoch=0):
        return sum(e.sum() for e in embeddings) * 0, {}


def rescaled_gradients(weight: float, accumulation: int = 1, micro_step: int = 0):
    torch.manual_seed(0)
    model = AlignmentEncoder(5, 4, encoder="mlp", num_layers=2, hidden_dim=6, progress_head={"hidden": 3}).double()
    task = TemporalAlignment(model, ZeroAlignment(), progress={"weight": weight, "samples_per_video": 3})
    batch = {"features": [torch.randn(12, 5, dtype=F64) for _ in range(2)], "handle": ["a", "b"],
             "segments": [[(0, 5, "1"), (7, 11, "2")], [(1, 9, "1")]]}
    ctx = StepContext(device=torch.device("cpu"), global_step=0, epoch=1, total_epochs=1, total_steps=1)
    task.training_step(batch, ctx).loss.backward()
    engine = types.SimpleNamespace(task=task, micro_step=micro_step,
                                   options=types.SimpleNamespace(grad_accum_steps=accumulation))
    (hook,) = task.default_hooks()
    hook.after_backward(engine)
    head = [p.grad.clone() for p in model.progress_head.parameters()]
    encoder = [p.grad.clone() for p in model.base.parameters()]
    return head, encoder


def test_head_gradients_do_not_depend_on_lambda_and_encoder_gradients_scale_with_it():
    head_small, encoder_small = rescaled_gradients(3.0)
    head_large, encoder_large = rescaled_gradients(1e6)
    for small, large in zip(head_small, head_large):
        assert torch.allclose(small, large, rtol=1e-10, atol=0)
    for small, large in zip(encoder_small, encoder_large):
        assert torch.allclose(large, small * (1e6 / 3.0), rtol=1e-10, atol=1e-300)
    assert any(g.abs().sum() > 0 for g in encoder_small)
    # inside an accumulation window nothing is rescaled yet (the gradients are still being summed)
    head_unscaled, _ = rescaled_gradients(1e6, accumulation=2, micro_step=0)
    assert torch.allclose(head_unscaled[0], head_large[0] * 1e6, rtol=1e-10)
    with pytest.raises(ValueError, match="drop-context head"):
        TemporalAlignment(AlignmentEncoder(5, 4, encoder="mlp", drop_context=True, context_hidden=[3]), TCCLoss())


# ----------------------------------------------------------------------------- learning and the engine
def test_tcc_training_raises_kendalls_tau(tmp_path, one_torch_thread):
    from data_loader.procedural import ProceduralDataset
    task_file, features = tiny_procedural(tmp_path, videos=8, nuisance=2.0)
    data = ProceduralDataset(task_file, features, split="train", tasks=["task0"])
    videos = [data[i]["features"] for i in range(len(data))]
    torch.manual_seed(0)
    encoder = torch.nn.Linear(16, 8)

    def tau():
        with torch.no_grad():
            e = [encoder(v) for v in videos]
        return np.mean([kendalls_tau(a, b) for i, a in enumerate(e) for j, b in enumerate(e) if i != j])

    before = tau()
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    loss_fn, order = TCCLoss(), torch.Generator().manual_seed(0)
    for _ in range(150):
        pair = torch.randperm(len(videos), generator=order)[:2]
        loss, _ = loss_fn([encoder(videos[i]) for i in pair])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert tau() > before + 0.1


def test_shipped_configs_validate_and_the_progress_config_trains(tmp_path, one_torch_thread):
    for path in sorted(glob.glob(str(ROOT / "configs/align/[!_]*.json"))):
        ConfigParser(load_config_file(path), source=path)
    task_file, features = tiny_procedural(tmp_path / "data")
    config = copy.deepcopy(load_config_file(ROOT / "configs/align/gtcc_progress.json"))
    for section in ("data_loader", "valid_data_loader"):
        config[section]["args"].update(task_file=task_file, features_dir=features)
    config["data_loader"]["args"]["num_frames"] = 12
    config["arch"]["args"].update(input_dim=16, num_heads=2)       # MCN fusion exercised too
    config["evaluators"] = [{"type": "AlignmentKendallTau"}, {"type": "OnlineProgressError"}]
    config["trainer"].update(epochs=1, max_steps_per_epoch=3, val_every=1, init_val=False,
                             save_dir=str(tmp_path / "runs"), log_every=1)
    parser = ConfigParser(config, source="gtcc_progress.json", device="cpu")
    metrics = launch.train(parser)
    assert np.isfinite(metrics["kendalls_tau"]) and np.isfinite(metrics["ope_action_head"])
    assert metrics["ope_action_constant"] == pytest.approx(0.25, abs=0.05)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(parser.run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/align_gtcc", "loss/progress", "drop/probability", "fusion/head_weight_0"} <= tags
    assert (parser.run_dir / "latest.pth").is_file()


def test_evaluators_fit_on_train_videos_and_score_test_videos():
    from trainer.evaluators.alignment import AlignmentKendallTau, OnlineProgressError, PhaseClassification
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 4)) * 10
    labels = torch.tensor([0, 1, 1, 1, 1, 0, 2, 2, 2, 2, 0])
    segments = [(1, 4, "a"), (6, 9, "b")]
    steps = np.zeros((11, 4))
    steps[[2, 3, 4, 7, 8, 9], 0] = 1.0                  # constant speed inside actions, still on background
    embeddings = torch.tensor(np.cumsum(steps, 0), dtype=torch.float32)
    batch = {"handle": ["v0", "v1", "v2"], "task": ["cook"] * 3, "split": ["train", "test", "test"],
             "labels": [labels] * 3, "segments": [segments] * 3}
    outputs = {"embeddings": [embeddings] * 3,
               "progress": [torch.tensor(action_progress([(1, 4), (6, 9)], 11), dtype=torch.float32)] * 3}
    results = {}
    for evaluator in (AlignmentKendallTau(), OnlineProgressError(), PhaseClassification()):
        evaluator.reset()
        evaluator.process(batch, outputs)
        results.update(evaluator.compute())
    assert results["ope"] == pytest.approx(0.0, abs=1e-6) and results["ope_action_head"] == pytest.approx(0.0, abs=1e-6)
    assert results["ope_action_constant"] == pytest.approx(np.mean(np.abs(0.5 - np.array([1, 2, 3, 4]) / 4)))
    # two test videos (identical): the evaluator averages the pair metric over (v1, v2) and (v2, v1)
    assert results["kendalls_tau_wild"] == pytest.approx(kendalls_tau_wild(embeddings, embeddings, labels, labels))
    assert results["enclosed_area_error"] == pytest.approx(enclosed_area_error(embeddings, embeddings, labels, labels))
    clean = {"embeddings": [torch.tensor(centres[labels.numpy()], dtype=torch.float32)] * 3, "progress": None}
    evaluator = PhaseClassification()
    evaluator.reset()
    evaluator.process(batch, clean)
    assert evaluator.compute()["phase_acc_100"] == 100.0
    from trainer.evaluators.alignment import FewShotPhaseClassification
    evaluator = FewShotPhaseClassification(shots=[1], episodes=2)
    evaluator.reset()
    evaluator.process(batch, clean)
    assert evaluator.compute() == {"few_shot_acc_1": 100.0, "few_shot_ci_1": 0.0}
    # drop context scoring 'x_0 > 0.5': frames 0 and 1 (x_0 = 0) predicted dropped; background is 0, 5, 10
    from trainer.evaluators.alignment import DropDetection
    evaluator = DropDetection()
    evaluator.reset()
    evaluator.process(batch, {**outputs, "contexts": [torch.tensor([-100.0, 0, 0, 0, 50.0])] * 3})
    drop = evaluator.compute()
    assert drop["drop_precision"] == 50.0 and drop["drop_recall"] == pytest.approx(100 / 3)
    assert drop["drop_f1"] == pytest.approx(40.0) and drop["drop_accuracy"] == pytest.approx(100 * 8 / 11)
