"""The model layer: loading models, tokenizers and embedders, and the decoding engine that answers with them."""
