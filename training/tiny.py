"""``--model tiny``: a small randomly initialised BERT and a vocabulary trained
on the shards' own text, so the whole flow runs offline on a CPU."""

from collections.abc import Iterable, Iterator

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from schemas import pairs as f
from training.encoder import Encoder
from training.prompts import E5, KINDS, Prompts
from training.shard_store import ShardsBySource, ShardStore, Source

SPECIAL_TOKENS = {
    "bos_token": "<s>",
    "pad_token": "<pad>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "mask_token": "<mask>",
}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 8000, max_length: int = 512) -> PreTrainedTokenizerFast:
    """A SentencePiece-style BPE vocabulary, as XLM-R's.

    Not WordPiece: its trainer numbers the "##" pieces in hash-map order, so the
    same text gives another vocabulary on every run (tokenizers issue #1794),
    and runs with the same seed could not be compared.
    """
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS.values()))
    tokenizer.train_from_iterator(texts, trainer)
    bos, eos = SPECIAL_TOKENS["bos_token"], SPECIAL_TOKENS["eos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, tokenizer.token_to_id(bos)), (eos, tokenizer.token_to_id(eos))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=max_length,
        model_input_names=["input_ids", "attention_mask"],
        cls_token=bos,
        sep_token=eos,
        **SPECIAL_TOKENS,
    )


def tiny_model(
    tokenizer: PreTrainedTokenizerFast, *, hidden_size: int = 128, layers: int = 2, seed: int = 0, **config_options
) -> BertModel:
    """``config_options`` go to ``BertConfig`` (dropout, for instance)."""
    config = BertConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden_size // 32),
        intermediate_size=4 * hidden_size,
        max_position_embeddings=tokenizer.model_max_length,
        **config_options,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BertModel(config)


def shard_texts(
    shards: ShardsBySource, store: ShardStore, max_rows_per_source: int = 100_000, prompts: Prompts = E5
) -> Iterator[str]:
    """Prompted queries, passages and negatives of the first rows of every source."""
    for name, source_shards in shards.items():
        remaining = max_rows_per_source
        for batch in Source(name, source_shards).record_batches(store):
            rows = batch.slice(0, remaining)
            for kind, column in zip(KINDS, (f.QUERY, f.PASSAGE), strict=True):
                yield from (prompts.format(text, kind) for text in rows.column(column).to_pylist())
            for negatives in rows.column(f.NEGATIVES).to_pylist():
                yield from (prompts.format(text, "passage") for text in negatives)
            remaining -= rows.num_rows
            if remaining <= 0:
                break


def build_tiny_encoder(
    shards: ShardsBySource,
    *,
    store: ShardStore | None = None,
    vocab_size: int = 8000,
    max_length: int = 512,
    seed: int = 0,
    **model_options,
) -> Encoder:
    texts = shard_texts(shards, store or ShardStore())
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size, max_length=max_length)
    return Encoder(tiny_model(tokenizer, seed=seed, **model_options), tokenizer)
