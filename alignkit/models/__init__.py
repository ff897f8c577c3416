"""Model helpers: the offline tiny model and loading."""

from alignkit.models.layers import decoder_layers, final_norm
from alignkit.models.tiny import CHAT_TEMPLATE, build_tiny_model, train_tokenizer

__all__ = ["CHAT_TEMPLATE", "build_tiny_model", "decoder_layers", "final_norm", "train_tokenizer"]
