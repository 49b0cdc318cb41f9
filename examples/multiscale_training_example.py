"""A few training steps of MultiScaleFrozenInTime with MultiScaleEgoNCE on the synthetic EgoClip set.

    python examples/multiscale_training_example.py [--data data/synthetic] [--small] [--steps 12]
        [--batch-size 8 --num-batches 1 --text minilm|tiny --lr 3e-4]

What it shows, with the project's real classes and a hand-written loop (the trainer does the same,
plus DDP, checkpoints and logging; see temporal_training_integration.py):
- MultiScaleEgoClipDataLoader with the TemporalPairBatchSampler: every batch holds the frames dict
  ``{'frames_4', 'frames_8', 'frames_16'}``, a ``scale_mask`` and the ``temporal_pairs`` (i, j, dt);
- MultiScaleFrozenInTime.forward_with_scales: fused and per-scale video embeddings, fusion weights;
- MultiScaleEgoNCE: EgoNCE at a temperature from the cosine schedule, plus lambda x the temporal
  consistency term on the batch's adjacent pairs; every component is printed per step.
To make the learning visible in ten steps, ``--num-batches`` fixed batches (default one) are decoded
once and trained on in turn; the loss on them is also measured before and after training in eval mode
at one temperature, so that neither dropout nor the temperature schedule blurs the comparison.
The dataset is generated in ``--data`` if absent (``--small``: a small one). About a minute on 2 CPU cores.
"""
import itertools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from data_loader.data_loader import MultiScaleEgoClipDataLoader  # noqa: E402
from examples.common import example_parser, synthetic_data  # noqa: E402
from model.loss import MultiScaleEgoNCE  # noqa: E402
from model.model import MultiScaleFrozenInTime  # noqa: E402
from model.presets import TEXT_PRESETS  # noqa: E402


def parse_args(argv=None):
    parser = example_parser(__doc__)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-batches", type=int, default=1, help="fixed batches, decoded once, trained on in turn")
    parser.add_argument("--scales", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--input-res", type=int, default=32, help="frame size fed to the model")
    parser.add_argument("--text", choices=sorted(TEXT_PRESETS), default="minilm",
                        help="minilm: the offline pretrained all-MiniLM-L6-v2; tiny: a 1-layer random BERT")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--cw", type=float, default=1.0, help="temporal consistency weight")
    parser.add_argument("--pair-ratio", type=float, default=0.5, help="TemporalPairBatchSampler ratio")
    parser.add_argument("--max-gap", type=float, default=2.0, help="seconds between clips of a temporal pair")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def model_inputs(model, batch):
    return {"text": model.tokenize(batch["text"]), "video": batch["video"], "scale_mask": batch["scale_mask"]}


def compute_loss(model, loss_fn, batch, step):
    outputs = model.forward_with_scales(model_inputs(model, batch))
    loss, components = loss_fn(outputs["text_embeds"], outputs["video_embeds"], verb_vec=batch["verb_vec"],
                               noun_vec=batch["noun_vec"], temporal_pairs=batch["temporal_pairs"],
                               scale_embeds=outputs["scale_embeds"], step=step)
    return loss, components, outputs


@torch.no_grad()
def mean_loss(model, loss_fn, batches, step):
    model.eval()
    losses = [compute_loss(model, loss_fn, batch, step)[0].item() for batch in batches]
    model.train()
    return sum(losses) / len(losses)


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    data = synthetic_data(args)

    loader = MultiScaleEgoClipDataLoader(
        data_dir=str(data / "videos"), meta_dir=str(data / "meta"), split="train",
        video_params={"input_res": args.input_res, "scales": args.scales, "loading": "strict"},
        tsfm_params={"hflip_prob": 0.0},  # the synthetic narrations say "left" and "right"
        batch_size=args.batch_size, num_workers=0, sampler="temporal_pair", temporal_pair_ratio=args.pair_ratio,
        max_temporal_gap=args.max_gap, seed=args.seed)
    print(f"dataset: {len(loader.dataset)} clips; sampler: {len(loader.batch_sampler)} batches of "
          f"{args.batch_size} per epoch, >= {loader.batch_sampler.pairs_per_batch} adjacent pairs each")
    start = time.perf_counter()
    batches = list(itertools.islice(loader, args.num_batches))
    print(f"decoded {len(batches)} batches in {time.perf_counter() - start:.1f} s")
    first = batches[0]
    print("  video:", ", ".join(f"{k} {tuple(v.shape)}" for k, v in first["video"].items()),
          f"| scale_mask {tuple(first['scale_mask'].shape)} | verb_vec {tuple(first['verb_vec'].shape)} "
          f"| noun_vec {tuple(first['noun_vec'].shape)}")
    for i, batch in enumerate(batches):
        pairs = batch["temporal_pairs"]
        print(f"  batch {i}: {len(pairs)} temporal pairs (i, j, dt): "
              + ", ".join(f"({int(a)}, {int(b)}, {dt:.2f}s)" for a, b, dt in pairs.tolist()))

    video_params = {"arch_config": "tiny", "embed_dim": 64, "patch_size": 16, "input_res": args.input_res,
                    "num_frames": max(args.scales)}
    model = MultiScaleFrozenInTime(video_params, TEXT_PRESETS[args.text], projection_dim=64, scales=args.scales)
    print(f"model: MultiScaleFrozenInTime, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
          f"scales {list(model.scales)}, text encoder '{args.text}'")
    loss_fn = MultiScaleEgoNCE(
        consistency_weight=args.cw,
        temperature_schedule={"initial_temp": 0.1, "final_temp": 0.05, "total_steps": args.steps},
        temporal={"loss_type": "contrastive", "max_time_gap": args.max_gap})
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)

    before = mean_loss(model, loss_fn, batches, args.steps)
    print(f"\n{'step':>4} {'batch':>5} {'total':>7} {'egonce':>7} {'temporal':>8} {'lambda':>6} {'temp':>6} "
          f"{'pairs':>5}  fusion weights {list(model.scales)}")
    start = time.perf_counter()
    for step in range(args.steps):
        b = step % len(batches)
        loss, parts, outputs = compute_loss(model, loss_fn, batches[b], step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        weights = outputs["fusion_weights"].mean(0).tolist()
        print(f"{step:>4} {b:>5} {loss.item():7.4f} {parts['egonce'].item():7.4f} {parts['temporal'].item():8.4f} "
              f"{parts['lambda']:6.3f} {parts['temperature']:6.4f} {parts['num_pairs']:>5}  "
              + " ".join(f"{w:.3f}" for w in weights))
    elapsed = time.perf_counter() - start
    after = mean_loss(model, loss_fn, batches, args.steps)

    print(f"\ntrained {args.steps} steps in {elapsed:.1f} s ({elapsed / args.steps:.2f} s/step)")
    print(f"loss on the {len(batches)} fixed batch(es), eval mode, temperature "
          f"{loss_fn.current_temperature(args.steps):.4f}: before training {before:.4f}, after {after:.4f} "
          f"({'decreased' if after < before else 'did NOT decrease'}: {after - before:+.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
