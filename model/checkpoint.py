"""Safe checkpoint reading and weight loading.

Reads EgoVLP checkpoints (`{'arch', 'epoch', 'state_dict', 'optimizer', 'monitor_best',
'config'}` with `module.`-prefixed keys and a pickled object of EgoVLP's own config class), our own
checkpoints, bare state dicts, timm ViT state dicts and `.safetensors` files.

Nothing in a checkpoint is ever executed. Files go through torch's weights-only unpickler; classes
it does not know (such as EgoVLP's `parse_config.ConfigParser` or `pathlib.PosixPath`) become inert
`ForeignObject` placeholders that only record their arguments and state, while functions and
anything from modules that can run code (os, subprocess, builtins.eval, ...) are refused.
"""
import builtins
import logging
import math
import os
import pickle
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

# Modules whose globals can run code or touch the system: a checkpoint naming them is refused.
CODE_EXECUTION_MODULES = frozenset({
    'os', 'posix', 'nt', 'sys', 'subprocess', 'shutil', 'importlib', 'runpy', 'pickle', '_pickle',
    'marshal', 'ctypes', 'socket', 'code', 'codeop', 'pty', 'webbrowser', 'multiprocessing', 'signal',
    'types', 'functools', 'operator', 'io', 'tempfile', 'inspect', 'threading', 'asyncio', 'pdb',
    'bdb', 'commands', 'popen2', 'platform', 'glob', 'zipimport', 'torch', 'numpy', 'copyreg',
})
# builtins that only construct plain data; every other builtin (eval, exec, getattr, ...) is refused.
DATA_BUILTINS = {name: getattr(builtins, name)
                 for name in ('int', 'float', 'str', 'bool', 'bytes', 'list', 'dict', 'tuple', 'set',
                              'frozenset', 'complex', 'bytearray', 'slice', 'range', 'object')}
# Keys a checkpoint may hold that our models do not (older transformers saved position_ids buffers).
IGNORABLE_KEY_PATTERNS = (re.compile(r'(^|\.)position_ids$'), re.compile(r'(^|\.)num_batches_tracked$'))
PREFIXES_TO_STRIP = ('module.', '_orig_mod.')
TEMPORAL_EMBED_FIXES = {'zeros': 'zeros', 'interpolate': 'interpolate', 'interp': 'interpolate',
                        'bilinear': 'interpolate'}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """The checkpoint's pickle names globals that could execute code."""


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file is truncated or corrupt (e.g. a copy or save cut short); the message names the path."""


class CheckpointShapeError(ValueError):
    """A checkpoint tensor's shape does not match the model's."""


class CheckpointKeyError(KeyError):
    """A strict load found missing or unexpected keys."""

    def __str__(self):
        return self.args[0]


class ForeignObject:
    """Inert stand-in for an object of a class the checkpoint names but we never import.

    Records construction arguments (`args`, `kwargs`) and pickled `state`; runs no code of the
    original class. `foreign_name` is the original `module.qualname`.
    """

    foreign_name = ''

    def __new__(cls, *args, **kwargs):
        instance = super().__new__(cls)
        instance.args, instance.kwargs, instance.state = args, kwargs, None
        return instance

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"ForeignObject({self.foreign_name})"


def _numpy_safe_globals():
    """numpy scalars/arrays/dtypes that checkpoints hold in metrics (e.g. `monitor_best`)."""
    try:
        import numpy
    except ImportError:
        return {}
    multiarray = numpy._core.multiarray if hasattr(numpy, '_core') else numpy.core.multiarray  # numpy 2 / 1
    safe = {'numpy.ndarray': numpy.ndarray, 'numpy.dtype': numpy.dtype}
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        safe[f'{module}.scalar'] = multiarray.scalar
        safe[f'{module}._reconstruct'] = multiarray._reconstruct
    dtypes = getattr(numpy, 'dtypes', None)
    for name in dir(dtypes) if dtypes else ():
        if name.endswith('DType'):
            safe[f'numpy.dtypes.{name}'] = getattr(dtypes, name)
    return safe


def _is_code_execution_global(full_name):
    module, _, name = full_name.rpartition('.')
    root = module.split('.')[0]
    if root == 'builtins':
        return name not in DATA_BUILTINS
    if root in CODE_EXECUTION_MODULES:
        return True
    # Only classes may become placeholders; a bare function in a checkpoint has no business there.
    return not name[:1].isupper()


def _globals_to_allow(path, unknown_globals):
    """Map each global torch does not allow by default to a safe object, or refuse the file."""
    numpy_safe = _numpy_safe_globals()
    refused = sorted(g for g in unknown_globals if g not in numpy_safe and _is_code_execution_global(g))
    if refused:
        raise UnsafeCheckpointError(
            f"{path}: refusing to load; its pickle names globals that could execute code: {', '.join(refused)}")
    allowed = []
    if any(full_name in numpy_safe for full_name in unknown_globals):
        # numpy dtype objects are rebuilt through their DType classes, which the pickle never names.
        allowed.extend((obj, full_name) for full_name, obj in numpy_safe.items())
    for full_name in sorted(unknown_globals):
        if full_name in numpy_safe:
            continue
        if full_name.startswith('builtins.'):
            allowed.append((DATA_BUILTINS[full_name.split('.', 1)[1]], full_name))
        else:
            placeholder = type(full_name.rpartition('.')[2], (ForeignObject,), {'foreign_name': full_name})
            allowed.append((placeholder, full_name))
    return allowed


def torch_load(path, **kwargs):
    """``torch.load(path, **kwargs)``; a truncated or corrupt file raises :class:`CorruptCheckpointError` naming
    ``path`` and its size instead of torch's bare reader error (``PytorchStreamReader failed reading zip
    archive``, ``EOFError``, ``OSError: Invalid argument``)."""
    try:
        return torch.load(path, **kwargs)
    except (RuntimeError, EOFError, OSError) as error:
        if not _is_truncation(error):
            raise
        raise _corrupt(path, error) from error


def _is_truncation(error):
    """Whether torch's reader failed on the file's bytes (not a missing file or an unrelated error)."""
    if isinstance(error, RuntimeError):
        return 'PytorchStreamReader' in str(error) or 'zip archive' in str(error)
    return isinstance(error, EOFError) or (isinstance(error, OSError) and not isinstance(error, FileNotFoundError))


def _corrupt(path, error):
    size = os.path.getsize(path) if os.path.exists(path) else 0
    return CorruptCheckpointError(f"{path}: checkpoint file is truncated or corrupt ({size} bytes): "
                                  f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no data'}")


def load_checkpoint_file(path):
    """Read a checkpoint (`torch.save` file or `.safetensors`) onto the CPU without running pickled code.

    Returns whatever the file holds (usually a dict). Unknown classes come back as `ForeignObject`s.
    Raises FileNotFoundError, UnsafeCheckpointError, CorruptCheckpointError (truncated/corrupt file) or
    pickle.UnpicklingError naming the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.endswith('.safetensors'):
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(path, device='cpu')
        except SafetensorError as error:
            raise _corrupt(path, error) from error
    try:
        unknown_globals = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except ValueError:
        unknown_globals = []  # legacy (non-zip) format: the weights-only load below still guards it
    except (RuntimeError, EOFError, OSError) as error:
        if not _is_truncation(error):
            raise
        raise _corrupt(path, error) from error
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(f"{path}: cannot read checkpoint safely: {error}") from error
    allowed = _globals_to_allow(path, unknown_globals)
    placeholders = [name for obj, name in allowed if isinstance(obj, type) and issubclass(obj, ForeignObject)]
    if placeholders:
        logger.info("%s: reading foreign objects as inert placeholders: %s", path, ', '.join(placeholders))
    try:
        with torch.serialization.safe_globals(allowed):
            return torch_load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        raise pickle.UnpicklingError(f"{path}: cannot read checkpoint safely: {error}") from error


def extract_state_dict(checkpoint, source='<checkpoint>'):
    """The tensor state dict inside a loaded checkpoint, with `module.`/`_orig_mod.` prefixes stripped."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{source}: expected a dict checkpoint, got {type(checkpoint).__name__}")
    for key in ('state_dict', 'model', 'module'):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    non_tensors = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise ValueError(
            f"{source}: found no state dict ('state_dict', 'model' or a bare dict of tensors); "
            f"non-tensor entries: {non_tensors[:5]}")
    return {_strip_prefixes(key): value for key, value in checkpoint.items()}


def _strip_prefixes(key):
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES_TO_STRIP:
            if key.startswith(prefix):
                key, stripped = key[len(prefix):], True
    return key


def resize_temporal_embed(embed, num_frames, fix='zeros'):
    """Resize `[1, F, D]` to `[1, num_frames, D]` as EgoVLP does: a longer embedding is truncated (its later rows
    are often untrained: EgoVLP trains 4 of 16); a shorter one is zero-padded ('zeros') or resampled ('interpolate').
    """
    if fix not in TEMPORAL_EMBED_FIXES:
        raise ValueError(f"temporal embed fix must be one of {sorted(TEMPORAL_EMBED_FIXES)}, got {fix!r}")
    if embed.shape[1] >= num_frames:
        return embed[:, :num_frames].clone()
    if TEMPORAL_EMBED_FIXES[fix] == 'interpolate':
        resized = F.interpolate(embed.transpose(1, 2).float(), size=num_frames, mode='linear', align_corners=False)
        return resized.transpose(1, 2).to(embed.dtype)
    padding = embed.new_zeros(embed.shape[0], num_frames - embed.shape[1], embed.shape[2])
    return torch.cat([embed, padding], dim=1)


def resize_pos_embed(embed, num_patches):
    """Resize a ViT `pos_embed [1, 1 + g*g, D]` (CLS first) to `[1, 1 + num_patches, D]` (bicubic on the grid)."""
    old_grid, new_grid = math.isqrt(embed.shape[1] - 1), math.isqrt(num_patches)
    if old_grid ** 2 != embed.shape[1] - 1 or new_grid ** 2 != num_patches:
        raise ValueError(f"pos_embed of {embed.shape[1]} tokens cannot be resized to {num_patches} patches: "
                         "both need a CLS token plus a square patch grid")
    cls, grid = embed[:, :1], embed[:, 1:]
    grid = grid.reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode='bicubic', align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, num_patches, -1).to(embed.dtype)
    return torch.cat([cls, grid], dim=1)


def summarise_keys(keys, limit=12):
    """Short text for a key list: block indices folded to '*', e.g. 'blocks.*.norm3.weight'."""
    patterns = list(dict.fromkeys(re.sub(r'\.\d+\.', '.*.', key) for key in keys))
    text = ', '.join(patterns[:limit])
    return text + (f", ... ({len(patterns) - limit} more)" if len(patterns) > limit else '')


@dataclass
class LoadReport:
    """What `load_weights` did: keys loaded, missing from / unexpected in the source, ignored, resized."""

    source: str
    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    ignored: list = field(default_factory=list)
    resized: list = field(default_factory=list)

    def __str__(self):
        lines = [f"{self.source}: loaded {len(self.loaded)} tensors"]
        for name in ('missing', 'unexpected', 'ignored'):
            keys = getattr(self, name)
            if keys:
                lines.append(f"  {name} ({len(keys)}): {summarise_keys(keys)}")
        lines.extend(f"  resized {message}" for message in self.resized)
        return '\n'.join(lines)


def _source_state_dict(source):
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        return name, extract_state_dict(load_checkpoint_file(name), name)
    return '<state dict>', extract_state_dict(source)


def _adapt_tensor(key, value, target, source, temporal_embed_fix, report):
    if value.shape == target.shape:
        return value
    if key.split('.')[-1] == 'temporal_embed' and value.dim() == 3 and value.shape[2] == target.shape[2]:
        report.resized.append(f"{key} {tuple(value.shape)} -> {tuple(target.shape)} ({temporal_embed_fix})")
        return resize_temporal_embed(value, target.shape[1], temporal_embed_fix)
    if key.split('.')[-1] == 'pos_embed' and value.dim() == 3 and value.shape[2] == target.shape[2]:
        report.resized.append(f"{key} {tuple(value.shape)} -> {tuple(target.shape)} (bicubic)")
        return resize_pos_embed(value, target.shape[1] - 1)
    raise CheckpointShapeError(
        f"{source}: '{key}' has shape {tuple(value.shape)} in the checkpoint but {tuple(target.shape)} in the model")


def load_weights(model, source, strict=False, allowed_missing=(), temporal_embed_fix='zeros', prefix=''):
    """Load a checkpoint path or state dict into `model`; returns a LoadReport (also logged).

    `prefix` selects a sub-tree and strips it (e.g. 'video_model.' to load a bare SpaceTimeTransformer).
    `temporal_embed` and `pos_embed` of another length are resized (logged); any other shape
    mismatch raises CheckpointShapeError naming the key and both shapes. With `strict`, keys
    missing from the source (except those starting with an `allowed_missing` prefix) or
    unexpected in it raise CheckpointKeyError. Ignorable buffers (`position_ids`) never count.
    """
    name, state_dict = _source_state_dict(source)
    if prefix:
        state_dict = {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
    report = LoadReport(source=name)
    targets = model.state_dict()
    to_load = {}
    for key, value in state_dict.items():
        if key in targets:
            to_load[key] = _adapt_tensor(key, value, targets[key], name, temporal_embed_fix, report)
        elif any(pattern.search(key) for pattern in IGNORABLE_KEY_PATTERNS):
            report.ignored.append(key)
        else:
            report.unexpected.append(key)
    report.unexpected.sort()
    report.ignored.sort()
    report.loaded = sorted(to_load)
    report.missing = sorted(key for key in targets if key not in to_load)
    if strict:
        fatal_missing = [key for key in report.missing if not key.startswith(tuple(allowed_missing))]
        if fatal_missing or report.unexpected:
            raise CheckpointKeyError(
                f"{name}: strict load failed\n  missing ({len(fatal_missing)}): {summarise_keys(fatal_missing)}\n"
                f"  unexpected ({len(report.unexpected)}): {summarise_keys(report.unexpected)}")
    model.load_state_dict(to_load, strict=False)
    logger.info("%s", report)
    return report


def load_vit_weights(video_model, path):
    """Initialise a SpaceTimeTransformer from a timm-format image ViT state dict (`.pth`/`.safetensors`).

    Non-strict: keys the ViT lacks (temporal_embed, timeattn.*, norm3.*) stay as initialised and are
    reported as missing ("new"); ViT-only keys (head.*, ...) are reported as unexpected; `pos_embed`
    is resized to the model's patch grid.
    """
    report = load_weights(video_model, path, strict=False)
    if not any(key.startswith('blocks.') for key in report.loaded):
        raise CheckpointKeyError(f"ViT init from {path}: no transformer block weights matched (keys must look like "
                                 f"timm's 'blocks.0.attn.qkv.weight'; found e.g. {summarise_keys(report.unexpected)})")
    logger.info("ViT init from %s: %d tensors loaded, new (not in the ViT): %s; not used: %s", path,
                len(report.loaded), summarise_keys(report.missing), summarise_keys(report.unexpected) or 'none')
    return report
