"""FrozenInTime (EgoVLP's dual encoder) and its multi-scale extension.

State-dict layout (EgoVLP's, so its checkpoints load): `video_model.*` (SpaceTimeTransformer),
`text_model.*` (Hugging Face encoder), `txt_proj = Sequential(ReLU, Linear(text_dim, D))`,
`vid_proj = Sequential(Linear(video_dim, D))`. The multi-scale models add only `fusion.*`, and keep
ONE shared backbone at `video_model`, applied to each scale in turn.

`video_params` keys: 'model' ('SpaceTimeTransformer'), 'arch_config' (a preset of
model.presets), 'num_frames' (temporal_embed rows), 'pretrained' (false or the path of a timm ViT
state dict), 'time_init', 'input_res' / 'img_size', the overrides 'embed_dim', 'depth',
'num_heads', 'patch_size', 'mlp_ratio', and 'temporal_embed_mode', 'grad_checkpointing',
'load_temporal_fix' ('zeros' | 'interpolate', for checkpoints with another temporal_embed length).
EgoVLP's 'vit_init' and 'attention_style' ('frozen-in-time') are accepted.
"""
import logging
from dataclasses import dataclass, field, fields
from typing import Annotated, Literal, NamedTuple

import torch
from torch import nn

from model.checkpoint import TEMPORAL_EMBED_FIXES, load_vit_weights
from model.checkpoint import load_weights as load_weights_into
from model.fusion import FUSION_TYPES, ScaleFusion
from model.presets import VIDEO_PRESETS, video_preset
from model.text_encoder import (DEFAULT_TEXT_MODEL, build_text_model, build_tokenizer, cls_embedding,
                                text_embed_dim, validate_text_params)
from model.video_transformer import TEMPORAL_EMBED_MODES, TIME_INITS, SpaceTimeTransformer
from utils.config import ArgsOf
from utils.registry import MODELS

logger = logging.getLogger(__name__)


@dataclass
class VideoModelParams:
    """The keys of `video_params` (see the module docstring) with build_video_model's defaults."""

    model: Literal['SpaceTimeTransformer'] = 'SpaceTimeTransformer'
    arch_config: Literal[tuple(VIDEO_PRESETS)] = 'base_patch16_224'
    num_frames: int = 4
    pretrained: Literal[False] | str = False
    time_init: Literal[TIME_INITS] = 'zeros'
    input_res: int | None = None
    img_size: int | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    patch_size: int | None = None
    mlp_ratio: float | None = None
    temporal_embed_mode: Literal[TEMPORAL_EMBED_MODES] = 'first'
    grad_checkpointing: bool = False
    load_temporal_fix: Literal[tuple(TEMPORAL_EMBED_FIXES)] = 'zeros'
    vit_init: str | None = None
    attention_style: Literal['frozen-in-time'] = 'frozen-in-time'


@dataclass
class TextParams:
    """The keys of `text_params` (see model.text_encoder) with their defaults."""

    model: str = DEFAULT_TEXT_MODEL
    pretrained: bool = True
    input: Literal['text'] = 'text'
    tokenizer: str | None = None
    config_overrides: dict = field(default_factory=dict)


VIDEO_PARAM_KEYS = tuple(f.name for f in fields(VideoModelParams))
ARCH_OVERRIDE_KEYS = ('embed_dim', 'depth', 'num_heads', 'patch_size', 'mlp_ratio')


def build_video_model(video_params):
    """SpaceTimeTransformer for `video_params` (see module docstring), ViT-initialised if 'pretrained' names a file."""
    unknown = sorted(set(video_params) - set(VIDEO_PARAM_KEYS))
    if unknown:
        raise ValueError(f"video_params: unknown keys {unknown}; allowed: {list(VIDEO_PARAM_KEYS)}")
    if video_params.get('model', 'SpaceTimeTransformer') != 'SpaceTimeTransformer':
        raise ValueError(f"video_params['model'] must be 'SpaceTimeTransformer', got {video_params['model']!r}")
    if video_params.get('attention_style', 'frozen-in-time') != 'frozen-in-time':
        raise ValueError("video_params['attention_style'] must be 'frozen-in-time'")
    if video_params.get('load_temporal_fix', 'zeros') not in TEMPORAL_EMBED_FIXES:
        raise ValueError(f"video_params['load_temporal_fix'] must be one of {sorted(TEMPORAL_EMBED_FIXES)}")
    if 'img_size' in video_params and 'input_res' in video_params \
            and video_params['img_size'] != video_params['input_res']:
        raise ValueError(f"video_params: img_size {video_params['img_size']} != input_res {video_params['input_res']}")
    arch = video_preset(video_params.get('arch_config', 'base_patch16_224'))
    arch.update({key: video_params[key] for key in ARCH_OVERRIDE_KEYS if key in video_params})
    arch['img_size'] = video_params.get('img_size', video_params.get('input_res', arch['img_size']))
    model = SpaceTimeTransformer(
        **arch, num_frames=video_params.get('num_frames', 4), time_init=video_params.get('time_init', 'zeros'),
        temporal_embed_mode=video_params.get('temporal_embed_mode', 'first'),
        grad_checkpointing=video_params.get('grad_checkpointing', False))
    pretrained = video_params.get('pretrained', False)
    if pretrained is True:
        raise ValueError("video_params['pretrained'] must be false or the path of a timm ViT state dict "
                         "(e.g. jx_vit_base_p16_224-80ecf9dd.pth)")
    if pretrained:
        load_vit_weights(model, pretrained)
    return model


def sim_matrix(a, b, eps=1e-8):
    """Cosine similarities `[Na, Nb]` between rows of `a [Na, D]` and `b [Nb, D]`."""
    a_norm = a / a.norm(dim=1, keepdim=True).clamp_min(eps)
    b_norm = b / b.norm(dim=1, keepdim=True).clamp_min(eps)
    return a_norm @ b_norm.transpose(0, 1)


def _without_pretrained(params):
    """Params that build random weights (a checkpoint about to be loaded overwrites them)."""
    return {**params, 'pretrained': False}


@MODELS.register()
class FrozenInTime(nn.Module):
    """EgoVLP's dual encoder: texts and videos -> `projection_dim` embeddings (not normalised).

    `load_checkpoint`: a checkpoint (EgoVLP's, ours, or a bare state dict) loaded strictly; pretrained
    ViT / text weights are then not loaded first, since the checkpoint replaces them.
    """

    # Parameter-name prefixes an EgoVLP checkpoint lacks and a strict load may leave missing.
    NEW_PARAMETER_PREFIXES = ()

    def __init__(self, video_params: Annotated[dict, ArgsOf(VideoModelParams)],
                 text_params: Annotated[dict, ArgsOf(TextParams)], projection_dim: int = 256,
                 projection: Literal['minimal'] = 'minimal', load_checkpoint: str | dict | None = None):
        super().__init__()
        if projection != 'minimal':
            raise ValueError(f"projection must be 'minimal', got {projection!r}")
        if load_checkpoint:
            video_params, text_params = _without_pretrained(video_params), _without_pretrained(text_params)
        self.video_params = dict(video_params)
        self.text_params = validate_text_params(text_params)
        self.video_model = build_video_model(self.video_params)
        self.text_model = build_text_model(self.text_params)
        self.tokenizer = build_tokenizer(self.text_params, self.text_model)
        self.txt_proj = nn.Sequential(nn.ReLU(), nn.Linear(text_embed_dim(self.text_model), projection_dim))
        self.vid_proj = nn.Sequential(nn.Linear(self.video_model.embed_dim, projection_dim))
        if load_checkpoint:
            self.load_weights(load_checkpoint)

    def load_weights(self, source, strict=True):
        """Load a checkpoint path or state dict (see model.checkpoint.load_weights); returns its LoadReport."""
        return load_weights_into(self, source, strict=strict, allowed_missing=self.NEW_PARAMETER_PREFIXES,
                                 temporal_embed_fix=self.video_params.get('load_temporal_fix', 'zeros'))

    def tokenize(self, texts, device=None):
        """`texts: list[str]` -> `{'input_ids', 'attention_mask'}` `[B, L]` on `device`."""
        return self.tokenizer(texts, device)

    def compute_text(self, tokens):
        """Projected [CLS] text embeddings `[B, D]`."""
        return self.txt_proj(cls_embedding(self.text_model, tokens))

    def compute_video(self, video):
        """Projected video embeddings `[B, D]` of `video [B, T, 3, R, R]`."""
        return self.vid_proj(self.video_model(video))

    def forward(self, data, return_embeds=True):
        """`data = {'text': tokens, 'video': ...}` -> `(text_embeds, video_embeds)`, or their sim matrix."""
        text_embeds = self.compute_text(data['text'])
        video_embeds = self.compute_video(data['video'])
        return (text_embeds, video_embeds) if return_embeds else sim_matrix(text_embeds, video_embeds)


def validate_scales(scales, eval_scales=None):
    """`(scales, eval_scales)` as int tuples; scales distinct and positive, eval_scales a subset (or None)."""
    scales = tuple(int(scale) for scale in scales)
    if not scales or len(set(scales)) != len(scales) or min(scales) < 1:
        raise ValueError(f"scales must be distinct positive frame counts, got {scales}")
    if eval_scales is not None:
        eval_scales = tuple(int(scale) for scale in eval_scales)
        if not eval_scales or not set(eval_scales) <= set(scales):
            raise ValueError(f"eval_scales {eval_scales} must be a non-empty subset of scales {scales}")
    return scales, eval_scales


def multiscale_video_params(video_params, scales):
    """`video_params` with `num_frames` defaulting to the largest scale; fewer rows than that is logged, since
    the longer scales then run on a resampled temporal embedding."""
    params = {'num_frames': max(scales), **video_params}
    if params['num_frames'] < max(scales):
        logger.warning("video_params.num_frames=%d < largest scale %d: the temporal embedding is resampled for "
                       "longer inputs (and an EgoVLP checkpoint's 16 rows are truncated to %d first)",
                       params['num_frames'], max(scales), params['num_frames'])
    return params


class MultiScaleEmbeddings(NamedTuple):
    """Fused `[B, D]`, per-scale `{scale: [B, D]}` (scales computed), and fusion weights `[B, S]`."""

    video_embeds: torch.Tensor
    scale_embeds: dict
    fusion_weights: torch.Tensor


class MultiScaleVideoPath:
    """Multi-scale video path shared by MultiScaleVideoEncoder and MultiScaleFrozenInTime (an nn.Module mixin).

    Uses the module's `video_model` (one shared backbone, applied to each scale in turn), `vid_proj`
    and `fusion`. In eval mode only `eval_scales` (when set) are encoded; the others get weight 0.
    """

    def _init_scales(self, scales, eval_scales, fusion_type, projection_dim):
        """Set `scales`, `eval_scales` (as returned by validate_scales) and build `fusion`."""
        self.scales = scales
        self.eval_scales = eval_scales
        self.fusion = ScaleFusion(len(scales), projection_dim, fusion_type)

    def active_scales(self):
        """Scales encoded in the current mode."""
        if not self.training and self.eval_scales is not None:
            return self.eval_scales
        return self.scales

    def get_fusion_weights(self):
        """Softmax scale weights `[S]` (sample-independent part for attention fusion)."""
        return self.fusion.get_fusion_weights()

    def _scale_frames(self, frames, scale):
        key = f'frames_{scale}'
        if key not in frames:
            raise KeyError(f"video frames dict has no '{key}'; it has {sorted(frames)}")
        video = frames[key]
        if video.dim() != 5 or video.shape[1] != scale:
            raise ValueError(f"'{key}' must be [B, {scale}, 3, R, R], got shape {tuple(video.shape)}")
        return video

    def encode_scales(self, frames, scale_mask=None):
        """MultiScaleEmbeddings of `frames {'frames_<s>': [B, s, 3, R, R]}`.

        `scale_mask [B, S]` bool marks the scales usable for each sample (masked: weight 0).
        """
        if not isinstance(frames, dict):
            raise TypeError(f"multi-scale video input must be a dict of 'frames_<s>' tensors, "
                            f"got {type(frames).__name__}")
        active = self.active_scales()
        scale_embeds = {scale: self.vid_proj(self.video_model(self._scale_frames(frames, scale)))
                        for scale in active}
        absent = torch.zeros_like(scale_embeds[active[0]])
        stacked = torch.stack([scale_embeds.get(scale, absent) for scale in self.scales], dim=1)
        usable = torch.tensor([scale in scale_embeds for scale in self.scales], device=stacked.device)
        if scale_mask is not None:
            if tuple(scale_mask.shape) != tuple(stacked.shape[:2]):
                raise ValueError(f"scale_mask must be [B, S] = {tuple(stacked.shape[:2])}, "
                                 f"got {tuple(scale_mask.shape)}")
            usable = usable & scale_mask.to(device=stacked.device, dtype=torch.bool)
        fused, weights = self.fusion(stacked, usable)
        return MultiScaleEmbeddings(fused, scale_embeds, weights)

    def compute_video(self, frames, scale_mask=None, return_scales=False):
        """Fused video embeddings `[B, D]`; with `return_scales`, `(fused, {scale: [B, D]})`."""
        embeddings = self.encode_scales(frames, scale_mask)
        if return_scales:
            return embeddings.video_embeds, embeddings.scale_embeds
        return embeddings.video_embeds


class MultiScaleVideoEncoder(MultiScaleVideoPath, nn.Module):
    """ONE shared SpaceTimeTransformer over each scale, projected and fused: frames dict -> `[B, D]`."""

    def __init__(self, video_params, projection_dim=256, scales=(4, 8, 16), fusion_type='learned_weighted',
                 eval_scales=None):
        super().__init__()
        scales, eval_scales = validate_scales(scales, eval_scales)
        self.video_model = build_video_model(multiscale_video_params(video_params, scales))
        self.vid_proj = nn.Sequential(nn.Linear(self.video_model.embed_dim, projection_dim))
        self._init_scales(scales, eval_scales, fusion_type, projection_dim)

    def forward(self, frames, scale_mask=None, return_scales=False):
        """See MultiScaleVideoPath.compute_video."""
        return self.compute_video(frames, scale_mask=scale_mask, return_scales=return_scales)


@MODELS.register()
class MultiScaleFrozenInTime(MultiScaleVideoPath, FrozenInTime):
    """FrozenInTime whose video side is the multi-scale encoder; `data['video']` is the frames dict.

    An EgoVLP checkpoint loads with only `fusion.*` new. `num_frames` defaults to the largest scale.
    """

    NEW_PARAMETER_PREFIXES = ('fusion.',)

    def __init__(self, video_params: Annotated[dict, ArgsOf(VideoModelParams)],
                 text_params: Annotated[dict, ArgsOf(TextParams)], projection_dim: int = 256,
                 projection: Literal['minimal'] = 'minimal', load_checkpoint: str | dict | None = None,
                 scales: tuple[int, ...] = (4, 8, 16), fusion_type: Literal[FUSION_TYPES] = 'learned_weighted',
                 eval_scales: tuple[int, ...] | None = None):
        scales, eval_scales = validate_scales(scales, eval_scales)
        video_params = multiscale_video_params(video_params, scales)
        if load_checkpoint:
            video_params, text_params = _without_pretrained(video_params), _without_pretrained(text_params)
        super().__init__(video_params, text_params, projection_dim=projection_dim, projection=projection)
        self._init_scales(scales, eval_scales, fusion_type, projection_dim)
        if load_checkpoint:
            self.load_weights(load_checkpoint)

    def forward(self, data, return_embeds=True):
        """`data = {'text': tokens, 'video': frames dict, 'scale_mask'?: [B, S]}` -> embeds or sim matrix."""
        text_embeds = self.compute_text(data['text'])
        video_embeds = self.compute_video(data['video'], scale_mask=data.get('scale_mask'))
        return (text_embeds, video_embeds) if return_embeds else sim_matrix(text_embeds, video_embeds)

    def forward_with_scales(self, data):
        """`{'text_embeds', 'video_embeds', 'scale_embeds': {s: [B, D]}, 'fusion_weights': [B, S]}`."""
        video = self.encode_scales(data['video'], scale_mask=data.get('scale_mask'))
        return {'text_embeds': self.compute_text(data['text']), 'video_embeds': video.video_embeds,
                'scale_embeds': video.scale_embeds, 'fusion_weights': video.fusion_weights}
