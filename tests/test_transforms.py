import numpy as np
import pytest
import torch

from data_loader.transforms import (IMAGENET_MEAN, IMAGENET_STD, CropParams, EvalVideoTransform,
                                    TrainVideoTransform, init_video_transform_dict)

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def normalise(tchw_uint8):
    return (tchw_uint8.float() / 255.0 - MEAN) / STD


def random_clip(t=3, h=24, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, h, w, 3), generator=g, dtype=torch.uint8)


def test_crop_without_resize_is_exact_normalised_slice():
    clip = random_clip(h=24, w=32)
    tsfm = TrainVideoTransform(input_res=16)
    out = tsfm.apply(clip, CropParams(top=5, left=7, height=16, width=16))
    expected = normalise(clip.permute(0, 3, 1, 2)[:, :, 5:21, 7:23])
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_flip_mirrors_the_crop():
    clip = random_clip()
    tsfm = TrainVideoTransform(input_res=12)
    plain = tsfm.apply(clip, CropParams(2, 3, 20, 18, flip=False))
    flipped = tsfm.apply(clip, CropParams(2, 3, 20, 18, flip=True))
    torch.testing.assert_close(flipped, plain.flip(-1))


def test_both_layouts_give_the_same_output():
    clip = random_clip()
    tsfm = EvalVideoTransform(input_res=16, resize_short=256, center_crop=224)
    torch.testing.assert_close(tsfm(clip), tsfm(clip.permute(0, 3, 1, 2).contiguous()), rtol=0, atol=0)


def test_constant_frame_normalises_to_exact_values():
    clip = torch.full((2, 40, 60, 3), 255, dtype=torch.uint8)
    out = EvalVideoTransform(input_res=8)(clip)
    expected = ((1.0 - MEAN) / STD).expand(2, 3, 8, 8)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_eval_crop_is_centred_fraction_of_short_side():
    params = EvalVideoTransform(input_res=16, resize_short=256, center_crop=224).sample_params(48, 64)
    assert params == CropParams(top=3, left=11, height=42, width=42, flip=False)
    # EgoVLP defaults on a 256-px short side: the whole short side, centred.
    assert EvalVideoTransform().sample_params(256, 340) == CropParams(0, 42, 256, 256, False)


def test_train_params_reproducible_and_within_bounds():
    tsfm = TrainVideoTransform(input_res=16, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3))
    first = [tsfm.sample_params(48, 64, np.random.default_rng(s)) for s in range(200)]
    again = [tsfm.sample_params(48, 64, np.random.default_rng(s)) for s in range(200)]
    assert first == again
    flips = 0
    for p in first:
        assert 0 <= p.top and p.top + p.height <= 48 and 0 <= p.left and p.left + p.width <= 64
        assert 0.45 <= p.height * p.width / (48 * 64) <= 1.0
        assert 3 / 4 - 0.06 <= p.width / p.height <= 4 / 3 + 0.06
        flips += p.flip
    assert 60 < flips < 140


def test_same_params_for_every_frame():
    frame = random_clip(t=1)
    clip = frame.repeat(4, 1, 1, 1)
    tsfm = TrainVideoTransform(input_res=16)
    params = tsfm.sample_params(24, 32, np.random.default_rng(3))
    out = tsfm.apply(clip, params)
    for t in range(1, 4):
        torch.testing.assert_close(out[t], out[0], rtol=0, atol=0)
    torch.testing.assert_close(tsfm.apply(clip[:2], params), out[:2], rtol=0, atol=0)


def test_fallback_crop_for_extreme_aspect():
    params = TrainVideoTransform(input_res=8, scale=(1.0, 1.0)).sample_params(10, 100, np.random.default_rng(0))
    assert (params.height, params.width) == (10, 13) and params.top == 0 and params.left == 43


def test_bad_inputs_raise():
    tsfm = EvalVideoTransform(input_res=8)
    with pytest.raises(TypeError, match="uint8"):
        tsfm(torch.zeros(2, 8, 8, 3))
    with pytest.raises(ValueError, match="shape"):
        tsfm(torch.zeros(8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="does not fit"):
        tsfm.apply(random_clip(), CropParams(10, 0, 20, 20))
    with pytest.raises(ValueError, match="center_crop"):
        EvalVideoTransform(resize_short=128, center_crop=256)


def test_transform_dict_splits():
    tsfms = init_video_transform_dict(input_res=32)
    assert isinstance(tsfms["train"], TrainVideoTransform)
    assert isinstance(tsfms["val"], EvalVideoTransform) and tsfms["test"] is tsfms["val"]
    assert tsfms["train"].input_res == 32


def test_hflip_prob_from_tsfm_params():
    rng = np.random.default_rng(0)
    never = init_video_transform_dict(input_res=16, hflip_prob=0.0)["train"]
    always = init_video_transform_dict(input_res=16, hflip_prob=1.0)["train"]
    assert not any(never.sample_params(32, 32, rng).flip for _ in range(50))
    assert all(always.sample_params(32, 32, rng).flip for _ in range(50))
