"""Model benchmarks, all measured in one process as ratios against a baseline.

1. Multi-scale step: forward+backward of one (4+8+16)-frame multi-scale video step vs one 16-frame
   step of the same shared backbone (target <= 1.85x; 28/16 = 1.75x is the frame-count floor).
   One plain 28-frame step is timed too: it shows how far the hardware itself is from linear in
   the token count, which the multi-scale step cannot beat.
2. Attention: our SDPA SpaceTimeTransformer vs EgoVLP's einsum attention (the reference written in
   tests/test_video_transformer.py), same weights, 16 frames, forward+backward time and peak memory.
3. Memory: peak memory of a multi-scale training step with and without gradient checkpointing
   (target: checkpointing cuts it by >= 40%).
   - CUDA: `torch.cuda.max_memory_allocated` above the memory held before the step.
   - CPU: torch has no allocator statistics there, so a TorchDispatchMode records the storage of
     every tensor an op creates (outputs that alias an input are views, not counted) and a weakref
     finalizer subtracts it when the storage is freed; the peak of that running total is the peak
     memory the step allocated (activations, saved tensors, gradients, temporaries; parameters
     excluded). Recomputation during backward runs under the same mode, so it is counted too.

Steps run interleaved after one warm-up round; the median and the best run of each are reported.

Usage: python benchmarks/bench_model.py [--preset small --batch-size 2 --repeats 9 --threads 1]
Writes benchmarks/results/model.json and prints a table.
"""
import argparse
import os
import statistics
import sys
import time
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import write_report  # noqa: E402
from model.model import MultiScaleVideoEncoder  # noqa: E402
from tests.test_video_transformer import egovlp_forward  # noqa: E402

SCALES = (4, 8, 16)


class LiveTensorBytes(TorchDispatchMode):
    """Running total and peak of bytes held by storages created under this mode (see module docstring)."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.device.type == 'cpu':
                self._track(tensor.untyped_storage(), inputs)
        return out

    def _track(self, storage, inputs):
        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in inputs or key in self._sizes:
            return
        self._sizes[key] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key):
        self.live -= self._sizes.pop(key)


def make_frames(batch, resolution, device):
    generator = torch.Generator().manual_seed(0)
    return {f'frames_{s}': torch.randn(batch, s, 3, resolution, resolution, generator=generator).to(device)
            for s in SCALES}


def multiscale_step(encoder, frames):
    encoder.zero_grad(set_to_none=True)
    encoder(frames).square().mean().backward()


def single_scale_step(encoder, video):
    encoder.zero_grad(set_to_none=True)
    encoder.vid_proj(encoder.video_model(video)).square().mean().backward()


def einsum_step(encoder, video):
    encoder.zero_grad(set_to_none=True)
    egovlp_forward(encoder.video_model, video).square().mean().backward()


def sdpa_step(encoder, video):
    encoder.zero_grad(set_to_none=True)
    encoder.video_model(video).square().mean().backward()


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def step_times(steps, repeats, device):
    """Seconds per run of each step in `steps` {name: fn}, run interleaved after one warm-up round."""
    times = {name: [] for name in steps}
    for round_index in range(repeats + 1):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            if round_index:
                times[name].append(time.perf_counter() - start)
    return times


def ratio_summary(numerator, denominator):
    """Median and best-run times of two steps and their ratios (the best-run ratio is the robust one
    on a shared machine: other processes only ever add time)."""
    return {'median_s': [statistics.median(numerator), statistics.median(denominator)],
            'best_s': [min(numerator), min(denominator)],
            'median_ratio': statistics.median(numerator) / statistics.median(denominator),
            'best_ratio': min(numerator) / min(denominator)}


def peak_step_bytes(step, device):
    """Peak bytes allocated during `step` (see module docstring for the method per device)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    tracker = LiveTensorBytes()
    with tracker:
        step()
    return tracker.peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--preset', default='small')
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=9)
    parser.add_argument('--threads', type=int, default=1,
                        help='CPU threads (1 keeps timings stable on a shared machine)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'results', 'model.json'))
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    encoder = MultiScaleVideoEncoder({'arch_config': args.preset, 'num_frames': max(SCALES), 'time_init': 'rand'},
                                     projection_dim=256, scales=SCALES).to(device)
    backbone = encoder.video_model
    resolution = backbone.patch_embed.img_size
    frames = make_frames(args.batch_size, resolution, device)
    video16 = frames['frames_16']

    video28 = torch.cat([frames[f'frames_{s}'] for s in SCALES], dim=1)
    times = step_times({'multi': lambda: multiscale_step(encoder, frames),
                        'single16': lambda: single_scale_step(encoder, video16),
                        'single28': lambda: single_scale_step(encoder, video28)}, args.repeats, device)
    multiscale = ratio_summary(times['multi'], times['single16'])
    single28 = ratio_summary(times['single28'], times['single16'])
    times = step_times({'sdpa': lambda: sdpa_step(encoder, video16),
                        'einsum': lambda: einsum_step(encoder, video16)}, args.repeats, device)
    attention = ratio_summary(times['einsum'], times['sdpa'])
    with torch.no_grad():
        max_diff = (backbone(video16) - egovlp_forward(backbone, video16)).abs().max().item()

    sdpa_bytes = peak_step_bytes(lambda: sdpa_step(encoder, video16), device)
    einsum_bytes = peak_step_bytes(lambda: einsum_step(encoder, video16), device)
    backbone.set_grad_checkpointing(False)
    plain_bytes = peak_step_bytes(lambda: multiscale_step(encoder, frames), device)
    backbone.set_grad_checkpointing(True)
    checkpointed_bytes = peak_step_bytes(lambda: multiscale_step(encoder, frames), device)
    backbone.set_grad_checkpointing(False)

    results = {
        'device': str(device), 'torch': torch.__version__, 'threads': torch.get_num_threads(),
        'preset': args.preset, 'embed_dim': backbone.embed_dim, 'depth': len(backbone.blocks),
        'patch_size': backbone.patch_embed.patch_size, 'resolution': resolution,
        'tokens_per_frame': backbone.patches_per_frame, 'batch_size': args.batch_size,
        'repeats': args.repeats,
        'multiscale_step': {'scales': list(SCALES), 'multiscale_vs_single_16': multiscale,
                            'target_ratio': 1.85, 'frame_floor_ratio': sum(SCALES) / max(SCALES),
                            'single_28_vs_single_16': single28},
        'attention_16_frames_fwd_bwd': {'einsum_reference_vs_sdpa': attention, 'max_abs_output_diff': max_diff,
                                        'sdpa_peak_mb': sdpa_bytes / 2 ** 20,
                                        'einsum_reference_peak_mb': einsum_bytes / 2 ** 20},
        'multiscale_step_peak_memory': {
            'method': 'cuda max_memory_allocated' if device.type == 'cuda' else 'dispatch-mode live storage bytes',
            'plain_mb': plain_bytes / 2 ** 20, 'checkpointed_mb': checkpointed_bytes / 2 ** 20,
            'reduction': 1 - checkpointed_bytes / plain_bytes, 'target_reduction': 0.40},
    }
    mem = results['multiscale_step_peak_memory']
    print(f"{args.preset} ({backbone.embed_dim}-d, depth {len(backbone.blocks)}, {resolution}px, "
          f"batch {args.batch_size}) on {device}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    print(f"{'measure':<48}{'median':>10}{'best':>10}")
    rows = [('multi-scale 4+8+16 step (s)', multiscale['median_s'][0], multiscale['best_s'][0]),
            ('16-frame step (s)', multiscale['median_s'][1], multiscale['best_s'][1]),
            ('ratio (target <= 1.85, floor 1.75)', multiscale['median_ratio'], multiscale['best_ratio']),
            ('one 28-frame step / 16-frame step', single28['median_ratio'], single28['best_ratio']),
            ('SDPA fwd+bwd, 16 frames (s)', attention['median_s'][1], attention['best_s'][1]),
            ('einsum reference fwd+bwd, 16 frames (s)', attention['median_s'][0], attention['best_s'][0]),
            ('SDPA speed-up', attention['median_ratio'], attention['best_ratio'])]
    for name, median, best in rows:
        print(f"{name:<48}{median:>10.3f}{best:>10.3f}")
    print(f"{'peak step memory (MiB): SDPA / einsum reference':<48}{sdpa_bytes / 2 ** 20:>10.1f}"
          f"{einsum_bytes / 2 ** 20:>10.1f}")
    print(f"{'multi-scale step peak memory (MiB): plain / ckpt':<48}{mem['plain_mb']:>10.1f}"
          f"{mem['checkpointed_mb']:>10.1f}")
    print(f"{'grad checkpointing reduction (target >= 0.40)':<48}{mem['reduction']:>10.2f}")
    write_report(results, args.out)


if __name__ == '__main__':
    main()
