"""FrozenInTime, the text wrapper, and the multi-scale encoder/fusion."""
import logging

import pytest
import torch

from model.model import FrozenInTime, MultiScaleFrozenInTime, MultiScaleVideoEncoder, sim_matrix
from model.text_encoder import build_tokenizer, offline_bert_folder

VIDEO = {'model': 'SpaceTimeTransformer', 'arch_config': 'tiny', 'img_size': 16, 'embed_dim': 16,
         'num_heads': 2, 'depth': 1, 'num_frames': 4}
TINY_DISTILBERT = {'model': 'distilbert-base-uncased', 'pretrained': False,
                   'config_overrides': {'n_layers': 1, 'dim': 32, 'hidden_dim': 64, 'n_heads': 2}}
TEXTS = ['#C C picks a bag of clothes from the floor', '#C C opens the door']


def _frames(batch, scales=(2, 4), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {f'frames_{s}': torch.randn(batch, s, 3, 16, 16, generator=generator) for s in scales}


@pytest.fixture(scope='module')
def frozen():
    torch.manual_seed(0)
    return FrozenInTime(VIDEO, TINY_DISTILBERT, projection_dim=8).eval()


@pytest.fixture(scope='module')
def multiscale():
    torch.manual_seed(0)
    return MultiScaleFrozenInTime(VIDEO, TINY_DISTILBERT, projection_dim=8, scales=(2, 4))


def test_sim_matrix_is_cosine():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 2.0], [-1.0, 0.0], [1.0, 1.0]])
    expected = torch.tensor([[0.8, -0.6, 0.7 * 2 ** 0.5], [0.0, -1.0, 2 ** -0.5]])
    torch.testing.assert_close(sim_matrix(a, b), expected)


def test_frozen_in_time_shapes_and_sim(frozen):
    tokens = frozen.tokenize(TEXTS)
    assert set(tokens) == {'input_ids', 'attention_mask'} and tokens['input_ids'].shape[0] == 2
    video = torch.randn(2, 4, 3, 16, 16)
    with torch.no_grad():
        text_embeds, video_embeds = frozen({'text': tokens, 'video': video})
        sim = frozen({'text': tokens, 'video': video}, return_embeds=False)
    assert text_embeds.shape == (2, 8) and video_embeds.shape == (2, 8)
    torch.testing.assert_close(sim, sim_matrix(text_embeds, video_embeds))
    torch.testing.assert_close(video_embeds, frozen.vid_proj(frozen.video_model(video)))


def test_projection_layout_follows_text_width(frozen):
    assert isinstance(frozen.txt_proj[0], torch.nn.ReLU)
    assert frozen.txt_proj[1].in_features == 32 and frozen.vid_proj[0].in_features == 16
    assert {key.split('.')[0] for key in frozen.state_dict()} == {'video_model', 'text_model', 'txt_proj', 'vid_proj'}


def test_text_is_cls_of_last_hidden_state(frozen):
    tokens = frozen.tokenize(TEXTS)
    with torch.no_grad():
        hidden = frozen.text_model(**tokens).last_hidden_state
        torch.testing.assert_close(frozen.compute_text(tokens), frozen.txt_proj(hidden[:, 0]))


def test_default_tokenizer_falls_back_offline_to_the_same_vocabulary(frozen, caplog):
    with caplog.at_level(logging.INFO, logger='model.text_encoder'):
        build_tokenizer(TINY_DISTILBERT, frozen.text_model)
    assert 'bert-base-uncased WordPiece vocabulary' in caplog.text
    tokens = frozen.tokenize(['a man picks a cup'])
    # bert-base-uncased WordPiece ids: [CLS] a man picks a cup [SEP]
    assert tokens['input_ids'].tolist() == [[101, 1037, 2158, 11214, 1037, 2452, 102]]


def test_pretrained_offline_minilm_text_model():
    model = FrozenInTime(VIDEO, {'model': offline_bert_folder(), 'pretrained': True}, projection_dim=8)
    assert model.txt_proj[1].in_features == 384
    with torch.no_grad():
        embeds = model.compute_text(model.tokenize(TEXTS))
    assert embeds.shape == (2, 8)


def test_random_text_model_from_local_folder_config():
    params = {'model': offline_bert_folder(), 'pretrained': False, 'config_overrides': {'num_hidden_layers': 1}}
    model = FrozenInTime(VIDEO, params, projection_dim=8)
    assert model.text_model.config.num_hidden_layers == 1 and model.txt_proj[1].in_features == 384
    assert model.tokenize(['hi'])['input_ids'].tolist() == [[101, 7632, 102]]


def test_tokenizer_folder_override_and_text_param_validation():
    params = {**TINY_DISTILBERT, 'tokenizer': offline_bert_folder()}
    model = FrozenInTime(VIDEO, params, projection_dim=8)
    assert model.tokenize(['hi'])['input_ids'].tolist() == [[101, 7632, 102]]
    with pytest.raises(ValueError, match='unknown keys'):
        FrozenInTime(VIDEO, {**TINY_DISTILBERT, 'bogus': 1})


def test_multiscale_forward_with_scales(multiscale):
    tokens = multiscale.tokenize(TEXTS)
    out = multiscale.forward_with_scales({'text': tokens, 'video': _frames(2)})
    assert out['text_embeds'].shape == (2, 8) and out['video_embeds'].shape == (2, 8)
    assert sorted(out['scale_embeds']) == [2, 4]
    weights = out['fusion_weights']
    torch.testing.assert_close(weights, torch.full((2, 2), 0.5))
    fused = weights[:, :1] * out['scale_embeds'][2] + weights[:, 1:] * out['scale_embeds'][4]
    torch.testing.assert_close(out['video_embeds'], fused)
    text_embeds, video_embeds = multiscale({'text': tokens, 'video': _frames(2)})
    torch.testing.assert_close(video_embeds, out['video_embeds'])


def test_one_shared_backbone(multiscale):
    assert {key.split('.')[0] for key in multiscale.state_dict()} == {
        'video_model', 'text_model', 'txt_proj', 'vid_proj', 'fusion'}
    frames = _frames(2)
    with torch.no_grad():
        fused, scale_embeds = multiscale.compute_video(frames, return_scales=True)
        torch.testing.assert_close(fused, multiscale.compute_video(frames))
        for scale in (2, 4):
            expected = multiscale.vid_proj(multiscale.video_model(frames[f'frames_{scale}']))
            torch.testing.assert_close(scale_embeds[scale], expected)


@pytest.mark.parametrize('fusion_type', ['learned_weighted', 'attention'])
def test_fusion_weights_sum_to_one_and_honour_mask(fusion_type):
    torch.manual_seed(0)
    encoder = MultiScaleVideoEncoder(VIDEO, projection_dim=8, scales=(1, 2, 4), fusion_type=fusion_type)
    torch.testing.assert_close(encoder.get_fusion_weights(), torch.full((3,), 1 / 3))
    frames = _frames(3, scales=(1, 2, 4))
    with torch.no_grad():
        torch.testing.assert_close(encoder.encode_scales(frames).fusion_weights, torch.full((3, 3), 1 / 3))
        encoder.fusion.scale_logits.copy_(torch.tensor([0.0, 1.0, 2.0]))
        if fusion_type == 'attention':
            encoder.fusion.scorer[-1].weight.normal_()
    mask = torch.tensor([[True, True, True], [False, True, True], [True, False, False]])
    with torch.no_grad():
        out = encoder.encode_scales(frames, scale_mask=mask)
        unmasked = encoder.encode_scales(frames).fusion_weights
    weights = out.fusion_weights
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert torch.all(weights[~mask] == 0)
    torch.testing.assert_close(weights[0], unmasked[0])
    torch.testing.assert_close(weights[1, 1:], unmasked[1, 1:] / unmasked[1, 1:].sum())
    assert weights[2].tolist() == [1.0, 0.0, 0.0]
    torch.testing.assert_close(encoder.get_fusion_weights(), torch.tensor([0.0, 1.0, 2.0]).softmax(0))
    if fusion_type == 'attention':
        assert not torch.allclose(unmasked[0], unmasked[1])  # per-sample weights
    else:
        torch.testing.assert_close(unmasked, encoder.get_fusion_weights().expand(3, 3))


def test_fully_masked_row_is_an_error():
    encoder = MultiScaleVideoEncoder(VIDEO, projection_dim=8, scales=(2, 4))
    with pytest.raises(ValueError, match=r'rows \[1\]'):
        encoder(_frames(2), scale_mask=torch.tensor([[True, False], [False, False]]))


def test_eval_scales_restrict_scales_in_eval_mode_only():
    encoder = MultiScaleVideoEncoder(VIDEO, projection_dim=8, scales=(2, 4), eval_scales=(4,))
    frames = _frames(2)
    with torch.no_grad():
        assert sorted(encoder(frames, return_scales=True)[1]) == [2, 4]
        encoder.eval()
        out = encoder.encode_scales({'frames_4': frames['frames_4']})
    assert sorted(out.scale_embeds) == [4]
    assert out.fusion_weights.tolist() == [[0.0, 1.0], [0.0, 1.0]]
    torch.testing.assert_close(out.video_embeds, out.scale_embeds[4])
    with pytest.raises(ValueError, match='subset'):
        MultiScaleVideoEncoder(VIDEO, scales=(2, 4), eval_scales=(8,))


def test_missing_scale_input_names_the_key():
    encoder = MultiScaleVideoEncoder(VIDEO, projection_dim=8, scales=(2, 4))
    with pytest.raises(KeyError, match='frames_4'):
        encoder({'frames_2': torch.randn(1, 2, 3, 16, 16)})
    with pytest.raises(ValueError, match=r'\[B, 4, 3, R, R\]'):
        encoder({'frames_2': torch.randn(1, 2, 3, 16, 16), 'frames_4': torch.randn(1, 3, 3, 16, 16)})


def test_multiscale_backbone_frames_default_to_largest_scale(multiscale):
    assert multiscale.video_model.num_frames == 4
    encoder = MultiScaleVideoEncoder({k: v for k, v in VIDEO.items() if k != 'num_frames'}, scales=(2, 8))
    assert encoder.video_model.num_frames == 8


def test_multiscale_training_step_reaches_every_video_parameter(multiscale):
    multiscale.train()
    multiscale.zero_grad(set_to_none=True)
    out = multiscale.forward_with_scales({'text': multiscale.tokenize(TEXTS), 'video': _frames(2)})
    sim_matrix(out['text_embeds'], out['video_embeds']).diag().sum().backward()
    no_grad = [name for name, param in multiscale.named_parameters()
               if not name.startswith('text_model') and param.grad is None]
    assert no_grad == []
