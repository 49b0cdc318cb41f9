"""Learning curves as a picture: every TensorBoard scalar of a run, one panel per tag group, in ``curves.png``.

    python -m utils.curves RUN_DIR [--out RUN_DIR/curves.png]

Scalars are read back from the run's TensorBoard event files, so the picture covers everything the run
logged (a run resumed into the same folder included). Tags are grouped by their first path component
(``loss/``, ``schedule/``, ``val/``, ...); learning rates get a panel of their own (log scale when all are positive); ``perf/`` is
left out, and a series that never changes is listed under the figure instead of drawn.
"""
from __future__ import annotations

import argparse
import os
from collections import defaultdict
from pathlib import Path

SKIPPED_GROUPS = ("perf",)
LR_GROUP = "learning rate"


def read_scalars(log_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` sorted by step from every event file under ``log_dir``; a step logged
    twice (a resumed run repeating steps) keeps its last value."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    series: dict[str, dict[int, float]] = defaultdict(dict)
    for events in sorted(Path(log_dir).rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                series[tag][event.step] = event.value
    return {tag: sorted(points.items()) for tag, points in sorted(series.items())}


def group_tags(tags) -> dict[str, list[str]]:
    """Tags by their first path component (``'loss/total'`` → ``'loss'``; a tag without ``/`` → ``'other'``;
    ``'schedule/lr_*'`` → ``'learning rate'``)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for tag in tags:
        group = tag.split("/", 1)[0] if "/" in tag else "other"
        if tag.startswith("schedule/lr"):
            group = LR_GROUP
        if group not in SKIPPED_GROUPS:
            groups[group].append(tag)
    return dict(groups)


def plot_curves(scalars: dict[str, list[tuple[int, float]]], out: str | os.PathLike, title: str = "") -> Path:
    """Write one panel per tag group (x: optimizer step) to ``out`` (PNG, written atomically); returns its path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    constant = {tag: points[0][1] for tag, points in scalars.items()
                if len(points) > 1 and all(value == points[0][1] for _, value in points)}
    groups = group_tags(tag for tag in scalars if tag not in constant)
    if not groups:
        raise ValueError(f"no changing scalars to plot for {out}")
    columns = min(3, len(groups))
    rows = -(-len(groups) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.6 * rows), squeeze=False)
    for axis, (group, tags) in zip(axes.flat, groups.items()):
        for tag in tags:
            steps, values = zip(*scalars[tag])
            style = {"marker": "o"} if len(steps) < 30 else {}
            axis.plot(steps, values, label=tag.split("/", 1)[-1], linewidth=1.2, **style)
        axis.set_title(group)
        if group == LR_GROUP and all(value > 0 for tag in tags for _, value in scalars[tag]):
            axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, ncol=1 + len(tags) // 8)
    for axis in list(axes.flat)[len(groups):]:
        axis.set_visible(False)
    if title:
        figure.suptitle(title)
    shown_constants = {tag: value for tag, value in constant.items() if group_tags([tag])}
    if shown_constants:
        figure.text(0.01, 0.005, "constant: " + ", ".join(f"{t} = {v:.4g}" for t, v in shown_constants.items()),
                    fontsize=7)
    figure.tight_layout(rect=(0, 0.03 if shown_constants else 0, 1, 1))
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, out)
    return out


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """``run_dir/curves.png`` from ``run_dir/tensorboard``."""
    run_dir = Path(run_dir)
    return plot_curves(read_scalars(run_dir / "tensorboard"), out or run_dir / "curves.png", title=run_dir.name)


def main(argv=None) -> int:
    cli = argparse.ArgumentParser(prog="python -m utils.curves", description=__doc__.split("\n\n")[0])
    cli.add_argument("run_dir", help="a training run folder (holds tensorboard/)")
    cli.add_argument("--out", help="PNG path (default: RUN_DIR/curves.png)")
    args = cli.parse_args(argv)
    print(plot_run(args.run_dir, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
