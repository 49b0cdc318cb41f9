"""utils.curves: scalars read back from TensorBoard files, grouped into panels, drawn to curves.png."""
import pytest
from torch.utils.tensorboard import SummaryWriter

from trainer.hooks import LearningCurves
from utils.curves import group_tags, plot_run, read_scalars


def _log(run_dir, points):
    with SummaryWriter(log_dir=str(run_dir / "tensorboard")) as writer:
        for tag, step, value in points:
            writer.add_scalar(tag, value, step)


def test_scalars_round_trip_and_a_repeated_step_keeps_its_last_value(tmp_path):
    _log(tmp_path, [("loss/total", 1, 2.0), ("loss/total", 2, 1.5), ("val/top1", 2, 40.0)])
    _log(tmp_path, [("loss/total", 2, 1.25), ("loss/total", 3, 1.0)])       # a resumed run repeats step 2
    scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars["loss/total"] == [(1, 2.0), (2, 1.25), (3, 1.0)]
    assert scalars["val/top1"] == [(2, 40.0)]


def test_tags_are_grouped_by_prefix_and_perf_is_left_out():
    tags = ["loss/total", "loss/scale4/egonce", "schedule/temperature", "val/inter_video_acc", "perf/samples_per_s",
            "lonely"]
    assert group_tags(tags + ["schedule/lr_decay"]) == {
        "loss": ["loss/total", "loss/scale4/egonce"], "schedule": ["schedule/temperature"],
        "val": ["val/inter_video_acc"], "other": ["lonely"], "learning rate": ["schedule/lr_decay"]}


def test_plot_run_writes_a_png(tmp_path):
    _log(tmp_path, [("loss/total", s, 1.0 / s) for s in range(1, 50)] + [("val/top1", 49, 80.0)])
    path = plot_run(tmp_path)
    assert path == tmp_path / "curves.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert not list(tmp_path.glob("*.tmp.png"))


def test_nothing_to_plot_is_an_error_naming_the_output(tmp_path):
    (tmp_path / "tensorboard").mkdir()
    with pytest.raises(ValueError, match="no changing scalars to plot for .*curves.png"):
        plot_run(tmp_path)
    _log(tmp_path, [("data/replaced", step, 0.0) for step in range(5)])      # constant: listed, not drawn
    with pytest.raises(ValueError, match="no changing scalars"):
        plot_run(tmp_path)


class _Engine:
    """What LearningCurves reads from the engine."""

    def __init__(self, run_dir):
        self.run_dir, self.epoch, self.evaluations, self.global_step = run_dir, 1, 0, 3
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def test_learning_curves_drawn_after_epochs_with_an_evaluation_and_at_the_end(tmp_path):
    engine, hook = _Engine(tmp_path), LearningCurves()
    png = tmp_path / "curves.png"
    for step in range(1, 4):
        engine.writer.add_scalar("loss/total", 1.0 / step, step)
    hook.after_epoch(engine)                                   # no evaluation yet: nothing drawn
    assert not png.exists()
    engine.evaluations = 1
    hook.after_epoch(engine)
    first = png.stat().st_mtime_ns
    hook.after_epoch(engine)                                   # same evaluation count: not redrawn
    assert png.stat().st_mtime_ns == first
    png.unlink()
    hook.after_train(engine)                                   # drawn at this step already: not redrawn
    assert not png.exists()
    engine.global_step = 4
    hook.after_train(engine)
    assert png.exists()
    engine.writer.close()
