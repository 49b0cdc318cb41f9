"""Multi-scale video encoding on random clips: one shared SpaceTimeTransformer, three scales, fused.

    python examples/simple_multiscale_demo.py [--batch-size 2 --scales 4 8 16 --scale-logits 0 0.5 1]

Builds a tiny MultiScaleVideoEncoder for each fusion type ('learned_weighted', 'attention'), encodes a
random batch given as ``{'frames_4': [B, 4, 3, R, R], 'frames_8': ..., 'frames_16': ...}`` and prints
the fused embedding, the per-scale embeddings and the fusion weights. Both fusions start with equal
weights; to show non-uniform weights as after training, the learned per-scale logits are set to
``--scale-logits`` and the attention scorer's last layer (initialised at zero) gets random weights.
Then a ``scale_mask`` removes scales per sample and the remaining weights renormalise to 1, and
``eval_scales`` shows an evaluation that encodes only some scales. Runs in a few seconds on a CPU.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from model.model import MultiScaleVideoEncoder  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=2, help="clips in the random batch (>= 2)")
    parser.add_argument("--scales", type=int, nargs="+", default=[4, 8, 16], help="frames per scale")
    parser.add_argument("--input-res", type=int, default=32, help="frame size R (a multiple of --patch-size)")
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--embed-dim", type=int, default=64, help="video transformer width")
    parser.add_argument("--projection-dim", type=int, default=32, help="output embedding size D")
    parser.add_argument("--scale-logits", type=float, nargs="+", default=[0.0, 0.5, 1.0],
                        help="learned per-scale fusion logits to set (one per scale; all 0 = the initial state)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if len(args.scale_logits) != len(args.scales):
        parser.error(f"--scale-logits needs one value per scale ({len(args.scales)})")
    if args.batch_size < 2 or len(args.scales) < 2:
        parser.error("--batch-size and the number of --scales must be >= 2 (the scale_mask example needs them)")
    return args


def fmt(values):
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def print_weights(title, weights, scales):
    print(f"  {title}  (scales {scales})")
    for i, row in enumerate(weights.tolist()):
        print(f"    sample {i}: {fmt(row)}  sum {sum(row):.4f}")


def build_encoder(args, fusion_type, eval_scales=None):
    video_params = {"arch_config": "tiny", "embed_dim": args.embed_dim, "patch_size": args.patch_size,
                    "input_res": args.input_res, "num_frames": max(args.scales)}
    encoder = MultiScaleVideoEncoder(video_params, projection_dim=args.projection_dim, scales=args.scales,
                                     fusion_type=fusion_type, eval_scales=eval_scales)
    with torch.no_grad():
        encoder.fusion.scale_logits.copy_(torch.tensor(args.scale_logits))
        if fusion_type == "attention":
            nn.init.normal_(encoder.fusion.scorer[-1].weight, std=1.0)
    return encoder.eval()


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    frames = {f"frames_{s}": torch.randn(args.batch_size, s, 3, args.input_res, args.input_res) for s in args.scales}
    print("input:", ", ".join(f"{k} {tuple(v.shape)}" for k, v in frames.items()))

    for fusion_type in ("learned_weighted", "attention"):
        encoder = build_encoder(args, fusion_type)
        n_params = sum(p.numel() for p in encoder.parameters())
        print(f"\n== fusion_type='{fusion_type}' ({n_params / 1e3:.1f} k parameters, one shared backbone)")
        with torch.no_grad():
            out = encoder.encode_scales(frames)
        print(f"  fused embedding: {tuple(out.video_embeds.shape)}")
        for scale, embeds in out.scale_embeds.items():
            print(f"  scale {scale:>2}: {tuple(embeds.shape)}")
        print(f"  sample-independent weights softmax(scale_logits): {fmt(encoder.get_fusion_weights().tolist())}")
        print_weights("fusion weights [B, S]", out.fusion_weights, args.scales)
        stacked = torch.stack([out.scale_embeds[s] for s in args.scales], dim=1)
        manual = (out.fusion_weights.unsqueeze(-1) * stacked).sum(dim=1)
        difference = (manual - out.video_embeds).abs().max()
        print(f"  fused == sum_s weight_s * embedding_s: max |difference| {difference:.2e}")

        mask = torch.ones(args.batch_size, len(args.scales), dtype=torch.bool)
        mask[0, -1] = False   # sample 0: the last scale is unusable (e.g. a clip too short for it)
        mask[1, 1:] = False   # sample 1: only the first scale is usable
        with torch.no_grad():
            masked = encoder.encode_scales(frames, scale_mask=mask)
        print(f"  scale_mask: {[[int(v) for v in row] for row in mask.tolist()]}")
        print_weights("fusion weights with scale_mask (masked = 0, the rest renormalised)", masked.fusion_weights,
                      args.scales)
        kept = out.fusion_weights[0, :-1]
        print(f"  sample 0 check: unmasked weights {fmt(kept.tolist())} / their sum {kept.sum():.3f} = "
              f"{fmt((kept / kept.sum()).tolist())}")

    eval_scales = args.scales[:-1]
    encoder = build_encoder(args, "learned_weighted", eval_scales=eval_scales)
    with torch.no_grad():
        out = encoder.encode_scales(frames)
    print(f"\n== eval_scales={eval_scales} (in eval mode only these scales are encoded)")
    print(f"  scales computed: {sorted(out.scale_embeds)}")
    print_weights("fusion weights", out.fusion_weights, args.scales)
    return 0


if __name__ == "__main__":
    sys.exit(main())
