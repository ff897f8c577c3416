"""Model helpers: the offline tiny model and loading."""

from alignkit.models.layers import decoder_layers
from alignkit.models.tiny import CHAT_TEMPLATE, build_tiny_model, train_tokenizer

__all__ = ["CHAT_TEMPLATE", "build_tiny_model", "decoder_layers", "train_tokenizer"]
