"""SpaceTimeTransformer: EgoVLP semantics against a hand-written einsum reference, init, frame counts."""
import pytest
import torch

from model.model import build_video_model
from model.video_transformer import SpaceTimeTransformer

TINY = dict(img_size=16, patch_size=8, embed_dim=16, depth=2, num_heads=2)


def _einsum_attend(q, k, v):
    sim = torch.einsum('b i d, b j d -> b i j', q, k)
    return torch.einsum('b i j, b j d -> b i d', sim.softmax(dim=-1), v)


def egovlp_var_attention(module, x, axis, num_frames):
    """EgoVLP's VarAttention.forward, einops rearranges spelled out as reshape/permute."""
    heads = module.num_heads
    batch, length, dim = x.shape
    head_dim = dim // heads
    per_frame = (length - 1) // num_frames
    q, k, v = module.qkv(x).chunk(3, dim=-1)
    # 'b n (h d) -> (b h) n d'
    q, k, v = (t.reshape(batch, length, heads, head_dim).permute(0, 2, 1, 3).reshape(batch * heads, length, head_dim)
               for t in (q, k, v))
    q = q * head_dim ** -0.5
    (cls_q, q_), (cls_k, k_), (cls_v, v_) = ((t[:, :1], t[:, 1:]) for t in (q, k, v))
    cls_out = _einsum_attend(cls_q, k, v)

    def to_groups(t):  # space: 'b (f n) d -> (b f) n d'; time: 'b (f n) d -> (b n) f d'
        t = t.reshape(batch * heads, num_frames, per_frame, head_dim)
        if axis == 'space':
            return t.reshape(-1, per_frame, head_dim)
        return t.permute(0, 2, 1, 3).reshape(-1, num_frames, head_dim)

    q_, k_, v_ = (to_groups(t) for t in (q_, k_, v_))
    repeats = q_.shape[0] // cls_k.shape[0]
    cls_k, cls_v = (t.repeat_interleave(repeats, dim=0) for t in (cls_k, cls_v))  # 'b () d -> (b r) () d'
    out = _einsum_attend(q_, torch.cat([cls_k, k_], dim=1), torch.cat([cls_v, v_], dim=1))
    if axis == 'space':
        out = out.reshape(batch * heads, num_frames * per_frame, head_dim)
    else:
        out = out.reshape(batch * heads, per_frame, num_frames, head_dim).permute(0, 2, 1, 3)
        out = out.reshape(batch * heads, num_frames * per_frame, head_dim)
    out = torch.cat([cls_out, out], dim=1)
    out = out.reshape(batch, heads, length, head_dim).permute(0, 2, 1, 3).reshape(batch, length, dim)
    return module.proj(out)


def egovlp_block(block, x, num_frames):
    """EgoVLP's SpaceTimeBlock.forward ('frozen-in-time' style, no dropout)."""
    time_residual = x + egovlp_var_attention(block.timeattn, block.norm3(x), 'time', num_frames)
    space_output = egovlp_var_attention(block.attn, block.norm1(time_residual), 'space', num_frames)
    space_residual = x + space_output
    return space_residual + block.mlp(block.norm2(space_residual))


def egovlp_forward(model, video):
    """EgoVLP's SpaceTimeTransformer.forward_features (token layout and embedding tiling as written there)."""
    batch, frames, chans, height, width = video.shape
    x = model.patch_embed.proj(video.reshape(-1, chans, height, width))
    x = x.flatten(2).transpose(2, 1).reshape(batch, -1, model.embed_dim)
    x = torch.cat([model.cls_token.expand(batch, -1, -1), x], dim=1)
    cls_embed = model.pos_embed[:, 0, :].unsqueeze(1)
    tile_pos_embed = model.pos_embed[:, 1:, :].repeat(1, model.num_frames, 1)
    tile_temporal_embed = model.temporal_embed.repeat_interleave(model.patches_per_frame, 1)
    total_pos_embed = torch.cat([cls_embed, tile_pos_embed + tile_temporal_embed], dim=1)
    x = x + total_pos_embed[:, :x.shape[1]]
    for block in model.blocks:
        x = egovlp_block(block, x, frames)
    return model.norm(x)[:, 0]


def _randomised(model):
    """Every parameter random (non-zero temporal attention and temporal_embed included)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model


@pytest.mark.parametrize('axis', ['space', 'time'])
def test_attention_matches_einsum_reference(axis):
    torch.manual_seed(0)
    block = _randomised(SpaceTimeTransformer(**TINY, num_frames=3)).blocks[0]
    module = block.attn if axis == 'space' else block.timeattn
    x = torch.randn(2, 1 + 3 * 4, 16)
    torch.testing.assert_close(module(x, 3), egovlp_var_attention(module, x, axis, 3), atol=1e-5, rtol=1e-5)


def test_block_matches_einsum_reference():
    torch.manual_seed(0)
    block = _randomised(SpaceTimeTransformer(**TINY, num_frames=3)).blocks[0]
    x = torch.randn(2, 1 + 3 * 4, 16)
    torch.testing.assert_close(block(x, 3), egovlp_block(block, x, 3), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('frames', [4, 3])
def test_model_matches_einsum_reference(frames):
    """Whole forward, including EgoVLP's first-rows temporal embedding for fewer frames than num_frames."""
    torch.manual_seed(0)
    model = _randomised(SpaceTimeTransformer(**TINY, num_frames=4))
    video = torch.randn(2, frames, 3, 16, 16)
    torch.testing.assert_close(model(video), egovlp_forward(model, video), atol=1e-5, rtol=1e-5)


def test_egovlp_state_dict_layout():
    with torch.device('meta'):
        model = build_video_model({'arch_config': 'base_patch16_224', 'num_frames': 16})
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert shapes['cls_token'] == (1, 1, 768)
    assert shapes['pos_embed'] == (1, 197, 768)
    assert shapes['temporal_embed'] == (1, 16, 768)
    assert shapes['patch_embed.proj.weight'] == (768, 3, 16, 16)
    block_keys = {f'blocks.{i}.{name}.{kind}' for i in range(12) for kind in ('weight', 'bias')
                  for name in ('norm1', 'attn.qkv', 'attn.proj', 'timeattn.qkv', 'timeattn.proj', 'norm2',
                               'mlp.fc1', 'mlp.fc2', 'norm3')}
    expected = block_keys | {'cls_token', 'pos_embed', 'temporal_embed', 'patch_embed.proj.weight',
                             'patch_embed.proj.bias', 'norm.weight', 'norm.bias'}
    assert set(shapes) == expected
    assert shapes['blocks.11.timeattn.qkv.weight'] == (2304, 768)


def test_zero_time_init_makes_temporal_attention_vanish():
    torch.manual_seed(0)
    model = SpaceTimeTransformer(**TINY, num_frames=4, time_init='zeros')
    block = model.blocks[0]
    assert torch.all(block.timeattn.qkv.weight == 0) and torch.all(block.timeattn.proj.weight == 1)
    x = torch.randn(2, 1 + 4 * 4, 16)
    assert torch.equal(block.timeattn(block.norm3(x), 4), torch.zeros_like(x))
    assert torch.all(model.temporal_embed == 0)


def test_zero_init_model_is_invariant_to_frame_order():
    torch.manual_seed(0)
    model = SpaceTimeTransformer(**TINY, num_frames=4, time_init='zeros')
    video = torch.randn(2, 4, 3, 16, 16)
    permuted = video[:, [2, 0, 3, 1]]
    torch.testing.assert_close(model(permuted), model(video), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        model.temporal_embed.normal_()
    assert (model(permuted) - model(video)).abs().max() > 1e-3


def test_output_shapes_for_any_frame_count():
    model = SpaceTimeTransformer(**TINY, num_frames=4)
    for frames in (1, 2, 4, 7):
        assert model(torch.randn(3, frames, 3, 16, 16)).shape == (3, 16)


def test_interpolated_temporal_embedding():
    model = SpaceTimeTransformer(**TINY, num_frames=4, temporal_embed_mode='interpolate')
    with torch.no_grad():
        model.temporal_embed.copy_(torch.arange(4.0).view(1, 4, 1).expand(1, 4, 16))
    rows = model.temporal_rows(8)[0, :, 0]
    torch.testing.assert_close(rows, torch.tensor([0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3]))
    assert torch.equal(model.temporal_rows(4), model.temporal_embed)
    torch.testing.assert_close(model.temporal_rows(2)[0, :, 0], torch.tensor([0.5, 2.5]))
    model.temporal_embed_mode = 'first'
    torch.testing.assert_close(model.temporal_rows(2)[0, :, 0], torch.tensor([0.0, 1.0]))


def test_batch_of_one_backward():
    model = SpaceTimeTransformer(**TINY, num_frames=4)
    model(torch.randn(1, 4, 3, 16, 16)).square().sum().backward()
    assert model.blocks[0].timeattn.qkv.weight.grad is not None
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0


def test_grad_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = _randomised(SpaceTimeTransformer(**TINY, num_frames=4))
    video = torch.randn(2, 4, 3, 16, 16)

    def grads(checkpointing):
        model.zero_grad(set_to_none=True)
        model.set_grad_checkpointing(checkpointing)
        model(video).square().sum().backward()
        return {name: param.grad.clone() for name, param in model.named_parameters()}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-6, msg=name)


def test_wrong_frame_size_is_a_clear_error():
    model = SpaceTimeTransformer(**TINY, num_frames=4)
    with pytest.raises(ValueError, match=r'\(3, 16, 16\)'):
        model(torch.randn(1, 4, 3, 32, 32))


def test_build_video_model_presets_and_overrides():
    model = build_video_model({'model': 'SpaceTimeTransformer', 'arch_config': 'tiny', 'num_frames': 6,
                               'embed_dim': 24, 'depth': 1, 'num_heads': 3, 'input_res': 16,
                               'grad_checkpointing': True, 'temporal_embed_mode': 'interpolate'})
    assert (model.embed_dim, len(model.blocks), model.blocks[0].attn.num_heads) == (24, 1, 3)
    assert model.grad_checkpointing and model.temporal_embed_mode == 'interpolate'
    assert model.patches_per_frame == 4 and model.temporal_embed.shape == (1, 6, 24)
    with pytest.raises(ValueError, match='unknown keys'):
        build_video_model({'arch_config': 'tiny', 'bogus': 1})
    with pytest.raises(ValueError, match='known presets'):
        build_video_model({'arch_config': 'huge'})
    with pytest.raises(ValueError, match='path of a timm ViT'):
        build_video_model({'arch_config': 'tiny', 'pretrained': True})
