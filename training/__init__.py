"""Contrastive training on the mined shards (torch + transformers, no Beam)."""
