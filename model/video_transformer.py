"""SpaceTimeTransformer: EgoVLP's (Frozen in Time) divided space-time video ViT.

Semantics and state-dict key names follow EgoVLP exactly, so its `video_model.*` weights load
with `strict=True` and give the same outputs:

- tokens are `[CLS] + patches of frame 0, frame 1, ...`; `pos_embed (1, N+1, D)` is shared by
  all frames; `temporal_embed (1, num_frames, D)` is added per frame (not to CLS);
- block: `t = x + timeattn(norm3(x))`, `x = x + attn(norm1(t))` (the residual is the block
  input, not `t`), `x = x + mlp(norm2(x))`;
- in both attentions the CLS query attends to every token, and the CLS key/value is
  prepended to every time group and every space group;
- `time_init='zeros'` makes every temporal attention output exactly zero at init;
- output `norm(x)[:, 0]`.

Differences from EgoVLP: attention runs through `F.scaled_dot_product_attention`, blocks can
be gradient-checkpointed, any frame count is accepted, and batch size 1 works under autograd.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

TIME_INITS = ('zeros', 'rand')
TEMPORAL_EMBED_MODES = ('first', 'interpolate')


class PatchEmbed(nn.Module):
    """Per-frame patch embedding: `[B, T, C, H, W]` -> `[B, T, N, D]`, N = (H / patch)^2."""

    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.patches_per_frame = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, video):
        if video.dim() != 5:
            raise ValueError(f"expected video [B, T, C, H, W], got shape {tuple(video.shape)}")
        batch, frames, chans, height, width = video.shape
        if (chans, height, width) != (self.in_chans, self.img_size, self.img_size):
            raise ValueError(
                f"expected frames of shape ({self.in_chans}, {self.img_size}, {self.img_size}), "
                f"got ({chans}, {height}, {width})")
        patches = self.proj(video.reshape(batch * frames, chans, height, width))
        return patches.flatten(2).transpose(1, 2).reshape(batch, frames, self.patches_per_frame, -1)


class DividedAttention(nn.Module):
    """EgoVLP's VarAttention over one axis ('space': within a frame, 'time': across frames).

    Input and output `[B, 1 + T*N, D]`, tokens ordered CLS, then frame-major patches.
    """

    def __init__(self, dim, num_heads, axis, qkv_bias=True):
        super().__init__()
        if axis not in ('space', 'time'):
            raise ValueError(f"axis must be 'space' or 'time', got {axis!r}")
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.axis = axis
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def zero_init(self):
        """EgoVLP's `time_init='zeros'`: qkv 0, proj weight 1, proj bias 0 (output exactly 0)."""
        with torch.no_grad():
            self.qkv.weight.zero_()
            if self.qkv.bias is not None:
                self.qkv.bias.zero_()
            self.proj.weight.fill_(1.0)
            self.proj.bias.zero_()

    def forward(self, x, num_frames):
        batch, length, dim = x.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        per_frame = (length - 1) // num_frames
        qkv = self.qkv(x).unflatten(-1, (3, heads, head_dim))
        cls, patches = qkv.split([1, length - 1], dim=1)
        _, k_all, v_all = qkv.transpose(1, 3).unbind(dim=2)  # [B, H, L, d] each
        cls_out = F.scaled_dot_product_attention(cls[:, :, 0].transpose(1, 2), k_all, v_all)
        patches = patches.unflatten(1, (num_frames, per_frame))
        if self.axis == 'time':
            patches = patches.transpose(1, 2)  # groups are patch positions, sequences run over frames
        groups = patches.shape[1]
        # every group gets the CLS token first: [B, G, 1 + S, 3, H, d]
        grouped = torch.cat([cls.unsqueeze(1).expand(batch, groups, 1, 3, heads, head_dim), patches], dim=2)
        q, k, v = grouped.flatten(0, 1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q[:, :, 1:], k, v).unflatten(0, (batch, groups))
        out = out.permute(0, 1, 3, 2, 4) if self.axis == 'space' else out.permute(0, 3, 1, 2, 4)
        out = out.reshape(batch, num_frames * per_frame, dim)
        return self.proj(torch.cat([cls_out.transpose(1, 2).reshape(batch, 1, dim), out], dim=1))


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (timm key names)."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SpaceTimeBlock(nn.Module):
    """Divided space-time block with EgoVLP's residual order (see module docstring)."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = DividedAttention(dim, num_heads, axis='space', qkv_bias=qkv_bias)
        self.timeattn = DividedAttention(dim, num_heads, axis='time', qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x, num_frames):
        time_residual = x + self.timeattn(self.norm3(x), num_frames)
        x = x + self.attn(self.norm1(time_residual), num_frames)
        return x + self.mlp(self.norm2(x))


def _init_vit_weights(module):
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class SpaceTimeTransformer(nn.Module):
    """Video ViT: `[B, T, 3, img_size, img_size]` float frames -> `[B, embed_dim]` CLS feature.

    `temporal_embed_mode`: with fewer input frames than `num_frames`, 'first' uses the first T rows
    of `temporal_embed` (EgoVLP) and 'interpolate' resamples all rows to T; more frames than
    `num_frames` always interpolate.
    """

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, depth=12, num_heads=12,
                 mlp_ratio=4.0, qkv_bias=True, num_frames=8, time_init='zeros',
                 temporal_embed_mode='first', grad_checkpointing=False):
        super().__init__()
        if time_init not in TIME_INITS:
            raise ValueError(f"time_init must be one of {TIME_INITS}, got {time_init!r}")
        if temporal_embed_mode not in TEMPORAL_EMBED_MODES:
            raise ValueError(
                f"temporal_embed_mode must be one of {TEMPORAL_EMBED_MODES}, got {temporal_embed_mode!r}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.embed_dim = self.num_features = embed_dim
        self.num_frames = num_frames
        self.temporal_embed_mode = temporal_embed_mode
        self.grad_checkpointing = grad_checkpointing
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.patches_per_frame = self.patch_embed.patches_per_frame
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patches_per_frame + 1, embed_dim))
        self.temporal_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
        self.blocks = nn.ModuleList(
            SpaceTimeBlock(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

        self.apply(_init_vit_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if time_init == 'zeros':
            for block in self.blocks:
                block.timeattn.zero_init()

    def set_grad_checkpointing(self, enable=True):
        """Recompute each block in backward (non-reentrant `torch.utils.checkpoint`)."""
        self.grad_checkpointing = enable

    def temporal_rows(self, num_frames):
        """Temporal embedding for `num_frames` input frames: `[1, num_frames, D]`."""
        if num_frames == self.num_frames:
            return self.temporal_embed
        if num_frames < self.num_frames and self.temporal_embed_mode == 'first':
            return self.temporal_embed[:, :num_frames]
        resampled = F.interpolate(self.temporal_embed.transpose(1, 2), size=num_frames, mode='linear',
                                  align_corners=False)
        return resampled.transpose(1, 2)

    def forward(self, video):
        """`video [B, T, 3, H, W]` -> CLS feature `[B, D]`."""
        batch, num_frames = video.shape[:2]
        patches = self.patch_embed(video)
        patches = patches + self.pos_embed[:, None, 1:] + self.temporal_rows(num_frames)[:, :, None]
        cls = self.cls_token + self.pos_embed[:, :1]
        x = torch.cat([cls.expand(batch, -1, -1), patches.flatten(1, 2)], dim=1)
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, num_frames, use_reentrant=False)
            else:
                x = block(x, num_frames)
        return self.norm(x[:, 0])
