"""Checkpoint reading and loading: EgoVLP layout, refusal of malicious pickles, resizing, ViT init."""
import argparse
import logging
import os
import pathlib
import subprocess
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from model.checkpoint import (CheckpointKeyError, CheckpointShapeError, ForeignObject, UnsafeCheckpointError,
                              extract_state_dict, load_checkpoint_file, load_vit_weights, load_weights)
from model.model import FrozenInTime, MultiScaleFrozenInTime, build_video_model
from model.video_transformer import SpaceTimeTransformer

VIDEO = {'model': 'SpaceTimeTransformer', 'arch_config': 'tiny', 'img_size': 16, 'embed_dim': 16,
         'num_heads': 2, 'depth': 1, 'num_frames': 4}
TINY_DISTILBERT = {'model': 'distilbert-base-uncased', 'pretrained': False,
                   'config_overrides': {'n_layers': 1, 'dim': 32, 'hidden_dim': 64, 'n_heads': 2}}


def _save_with_foreign_config(obj, path):
    """torch.save `obj` plus an instance of a class from a module that is gone when loading (like EgoVLP's)."""
    module = types.ModuleType('parse_config')
    exec('class ConfigParser:\n    pass\n', module.__dict__)
    sys.modules['parse_config'] = module
    try:
        config = module.ConfigParser()
        config._config = OrderedDict(name='EgoClip_4f', arch={'type': 'FrozenInTime'})
        config._save_dir = pathlib.Path('/results/EgoClip_4f')
        config.args = argparse.Namespace(config='configs/pt/egoclip.json', local_rank=0)
        torch.save({**obj, 'config': config}, path)
    finally:
        del sys.modules['parse_config']


@pytest.fixture(scope='module')
def source_model():
    torch.manual_seed(0)
    model = FrozenInTime(VIDEO, TINY_DISTILBERT, projection_dim=8).eval()
    with torch.no_grad():
        for block in model.video_model.blocks:
            block.timeattn.qkv.weight.normal_(std=0.1)
        model.video_model.temporal_embed.normal_(std=0.1)
    return model


@pytest.fixture(scope='module')
def egovlp_checkpoint(source_model, tmp_path_factory):
    path = tmp_path_factory.mktemp('ckpt') / 'egovlp.pth'
    state_dict = {f'module.{key}': value for key, value in source_model.state_dict().items()}
    state_dict['module.text_model.embeddings.position_ids'] = torch.arange(512).unsqueeze(0)
    _save_with_foreign_config({'arch': 'FrozenInTime', 'epoch': 3, 'state_dict': state_dict,
                               'optimizer': {'state': {}, 'param_groups': [{'lr': 3e-5, 'params': [0, 1]}]},
                               'monitor_best': np.float64(0.5)}, path)
    return path


def test_egovlp_layout_gives_exactly_the_source_state_dict_without_prefixes(source_model, egovlp_checkpoint):
    """The file pickles EgoVLP's config object (class parse_config.ConfigParser, not importable here)."""
    state_dict = extract_state_dict(load_checkpoint_file(egovlp_checkpoint), str(egovlp_checkpoint))
    assert 'parse_config' not in sys.modules
    expected = {**source_model.state_dict(), 'text_model.embeddings.position_ids': torch.arange(512).unsqueeze(0)}
    assert list(state_dict) == list(expected)
    for key, value in expected.items():
        assert torch.equal(state_dict[key], value), key


def test_egovlp_checkpoint_reads_with_inert_config(egovlp_checkpoint):
    checkpoint = load_checkpoint_file(egovlp_checkpoint)
    assert checkpoint['epoch'] == 3 and checkpoint['monitor_best'] == 0.5
    config = checkpoint['config']
    assert isinstance(config, ForeignObject) and config.foreign_name == 'parse_config.ConfigParser'
    assert config.state['_config']['name'] == 'EgoClip_4f'
    assert isinstance(config.state['_save_dir'], ForeignObject)
    assert all(key.startswith('module.') for key in checkpoint['state_dict'])


def test_egovlp_checkpoint_loads_into_frozen_in_time(source_model, egovlp_checkpoint):
    model = FrozenInTime(VIDEO, TINY_DISTILBERT, projection_dim=8, load_checkpoint=egovlp_checkpoint).eval()
    tokens = model.tokenize(['#C C opens the door', '#C C cuts a tomato'])
    video = torch.randn(2, 4, 3, 16, 16)
    with torch.no_grad():
        for got, expected in zip(model({'text': tokens, 'video': video}),
                                 source_model({'text': tokens, 'video': video})):
            torch.testing.assert_close(got, expected)


def test_egovlp_checkpoint_loads_into_multiscale_with_only_fusion_new(source_model, egovlp_checkpoint):
    model = MultiScaleFrozenInTime(VIDEO, TINY_DISTILBERT, projection_dim=8, scales=(2, 4),
                                   load_checkpoint=egovlp_checkpoint).eval()
    report = model.load_weights(egovlp_checkpoint)
    assert report.missing and all(key.startswith('fusion.') for key in report.missing)
    assert report.unexpected == [] and report.ignored == ['text_model.embeddings.position_ids']
    video = torch.randn(2, 4, 3, 16, 16)
    with torch.no_grad():
        _, scale_embeds = model.compute_video({'frames_2': video[:, :2], 'frames_4': video}, return_scales=True)
        torch.testing.assert_close(scale_embeds[4], source_model.compute_video(video))
        torch.testing.assert_close(scale_embeds[2], source_model.compute_video(video[:, :2]))


def test_video_model_subtree_loads_strictly(source_model, egovlp_checkpoint):
    video_model = SpaceTimeTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_frames=4)
    report = load_weights(video_model, egovlp_checkpoint, strict=True, prefix='video_model.')
    assert report.missing == [] and report.unexpected == []
    video = torch.randn(1, 3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(video_model(video), source_model.video_model(video))


class _Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize('func', [os.system, eval, subprocess.call, pathlib.Path.touch],
                         ids=['os.system', 'eval', 'subprocess.call', 'pathlib.Path.touch'])
def test_malicious_pickle_is_refused(tmp_path, func):
    marker = tmp_path / 'pwned'
    args = {os.system: (f'touch {marker}',), eval: (f'open({str(marker)!r}, "w")',),
            subprocess.call: (['touch', str(marker)],), pathlib.Path.touch: (marker,)}[func]
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'config': _Payload(func, *args)}, path)
    with pytest.raises(UnsafeCheckpointError, match='could execute code'):
        load_checkpoint_file(path)
    with pytest.raises(UnsafeCheckpointError):
        load_weights(torch.nn.Linear(1, 1), path)
    assert not marker.exists()


def test_own_and_bare_checkpoints(source_model, tmp_path):
    state_dict = source_model.state_dict()
    torch.save({'epoch': 1, 'state_dict': state_dict, 'config': {'name': 'ours'}}, tmp_path / 'ours.pth')
    torch.save(state_dict, tmp_path / 'bare.pth')
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(tmp_path / 'bare.safetensors'))
    for name in ('ours.pth', 'bare.pth', 'bare.safetensors'):
        target = FrozenInTime(VIDEO, TINY_DISTILBERT, projection_dim=8, load_checkpoint=tmp_path / name)
        assert torch.equal(target.vid_proj[0].weight, source_model.vid_proj[0].weight), name


@pytest.mark.parametrize('frames, fix, expected_rows', [
    (2, 'zeros', [0.0, 1.0]),
    (6, 'zeros', [0.0, 1.0, 2.0, 3.0, 0.0, 0.0]),
    (2, 'interpolate', [0.0, 1.0]),  # a longer embedding is always truncated, as in EgoVLP
    (6, 'interpolate', [0.0, 0.5, 7 / 6, 11 / 6, 2.5, 3.0]),
])
def test_temporal_embed_length_is_adapted_and_logged(frames, fix, expected_rows, caplog):
    source = SpaceTimeTransformer(img_size=16, patch_size=8, embed_dim=4, depth=1, num_heads=2, num_frames=4)
    state_dict = {f'module.video_model.{k}': v for k, v in source.state_dict().items()}
    state_dict['module.video_model.temporal_embed'] = torch.arange(4.0).view(1, 4, 1).expand(1, 4, 4)
    target = SpaceTimeTransformer(img_size=16, patch_size=8, embed_dim=4, depth=1, num_heads=2, num_frames=frames)
    with caplog.at_level(logging.INFO, logger='model.checkpoint'):
        report = load_weights(target, state_dict, strict=True, prefix='video_model.', temporal_embed_fix=fix)
    assert target.temporal_embed[0, :, 0].tolist() == pytest.approx(expected_rows)
    assert report.resized == [f'temporal_embed (1, 4, 4) -> (1, {frames}, 4) ({fix})']
    assert 'resized temporal_embed' in caplog.text


def test_shape_mismatch_names_key_and_shapes():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    with pytest.raises(CheckpointShapeError, match=r"'0.weight' has shape \(4, 3\) .* but \(2, 3\)"):
        load_weights(model, {'0.weight': torch.zeros(4, 3), '0.bias': torch.zeros(2)})


def test_strict_load_reports_missing_and_unexpected():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    source = {'module.0.weight': torch.ones(2, 3), 'module.extra.weight': torch.ones(1)}
    with pytest.raises(CheckpointKeyError, match=r'missing \(1\): 0.bias[\s\S]*unexpected \(1\): extra.weight'):
        load_weights(model, source, strict=True)
    report = load_weights(model, source)
    assert (report.loaded, report.missing, report.unexpected) == (['0.weight'], ['0.bias'], ['extra.weight'])
    assert torch.equal(model[0].weight, torch.ones(2, 3))


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_vit_init_from_timm_state_dict(tmp_path, suffix):
    """A timm image ViT (grid 2x2, with a head) initialises a video model with grid 4x4."""
    torch.manual_seed(0)
    vit = {'cls_token': torch.randn(1, 1, 16), 'pos_embed': torch.randn(1, 5, 16),
           'patch_embed.proj.weight': torch.randn(16, 3, 8, 8), 'patch_embed.proj.bias': torch.randn(16),
           'norm.weight': torch.randn(16), 'norm.bias': torch.randn(16),
           'head.weight': torch.randn(10, 16), 'head.bias': torch.randn(10)}
    for name, shape in (('norm1', (16,)), ('norm2', (16,)), ('attn.qkv', (48, 16)), ('attn.proj', (16, 16)),
                        ('mlp.fc1', (64, 16)), ('mlp.fc2', (16, 64))):
        vit[f'blocks.0.{name}.weight'] = torch.randn(shape)
        vit[f'blocks.0.{name}.bias'] = torch.randn(shape[0])
    path = tmp_path / f'vit{suffix}'
    if suffix == '.pth':
        torch.save(vit, path)
    else:
        save_file(vit, str(path))
    model = SpaceTimeTransformer(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_frames=4)
    report = load_vit_weights(model, path)
    assert report.unexpected == ['head.bias', 'head.weight']
    assert report.missing == ['blocks.0.norm3.bias', 'blocks.0.norm3.weight', 'blocks.0.timeattn.proj.bias',
                              'blocks.0.timeattn.proj.weight', 'blocks.0.timeattn.qkv.bias',
                              'blocks.0.timeattn.qkv.weight', 'temporal_embed']
    assert report.resized == ['pos_embed (1, 5, 16) -> (1, 17, 16) (bicubic)']
    assert torch.equal(model.blocks[0].attn.qkv.weight, vit['blocks.0.attn.qkv.weight'])
    assert torch.equal(model.pos_embed[:, 0], vit['pos_embed'][:, 0])
    assert torch.all(model.blocks[0].timeattn.qkv.weight == 0) and torch.all(model.temporal_embed == 0)
    from_params = build_video_model({'arch_config': 'tiny', 'img_size': 32, 'embed_dim': 16, 'depth': 1,
                                     'num_heads': 2, 'pretrained': str(path)})
    assert torch.equal(from_params.blocks[0].mlp.fc1.weight, vit['blocks.0.mlp.fc1.weight'])


def test_vit_init_that_matches_no_block_is_an_error(tmp_path):
    """A ViT saved under another prefix ('vit.blocks...') would silently load nothing."""
    path = tmp_path / 'prefixed.pth'
    torch.save({'vit.blocks.0.attn.qkv.weight': torch.randn(48, 16), 'vit.cls_token': torch.randn(1, 1, 16)}, path)
    model = SpaceTimeTransformer(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_frames=4)
    with pytest.raises(CheckpointKeyError, match='no transformer block weights matched'):
        load_vit_weights(model, path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_checkpoint_file(tmp_path / 'nope.pth')
