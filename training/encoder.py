"""A text encoder: any transformers encoder, mean pooling over the attention mask, L2 normalisation.

Saved as a Hugging Face model directory that also holds the sentence-transformers
files, so ``SentenceTransformer(path)`` gives the same embeddings, with the
E5 prefixes registered as its ``query`` and ``passage`` prompts.
"""

import json
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer
from transformers.utils import cached_file

from training.prompts import E5, InstructPrompts, Kind, Prompts, stored_prompts

_ST_CONFIG = "config_sentence_transformers.json"
_ST_MODULE_CONFIG = "sentence_bert_config.json"


def autocast(device: torch.device):
    """bf16 autocast on GPU; full fp32 elsewhere (CPU bf16 is slow and changes results)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


class Encoder(torch.nn.Module):
    def __init__(self, model, tokenizer, *, prompts: Prompts | InstructPrompts = E5, max_length: int | None = None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.prompts = prompts
        positions = getattr(model.config, "max_position_embeddings", None) or tokenizer.model_max_length
        self.max_length = max_length or min(tokenizer.model_max_length, positions)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **model_kwargs) -> "Encoder":
        """A local directory or hub id; prompts and length limit come from its sentence-transformers files if any."""
        name_or_path = str(name_or_path)
        prompts = _optional_json(name_or_path, _ST_CONFIG).get("prompts", {})
        return cls(
            AutoModel.from_pretrained(name_or_path, **model_kwargs),
            AutoTokenizer.from_pretrained(name_or_path),
            prompts=stored_prompts(prompts.get("query", E5.query), prompts.get("passage", E5.passage)),
            max_length=_optional_json(name_or_path, _ST_MODULE_CONFIG).get("max_seq_length"),
        )

    @property
    def dimension(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def enable_activation_checkpointing(self) -> None:
        """Recompute each layer's activations in the backward pass instead of keeping them."""
        options = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
        else:  # transformers before the rename, which deprecated the old name
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(mean_pool(hidden.float(), attention_mask), dim=-1)

    @torch.inference_mode()
    def encode(
        self,
        texts: list[str],
        kind: Kind = "query",
        batch_size: int = 64,
        prompts: Prompts | InstructPrompts | None = None,
    ) -> torch.Tensor:
        """Normalised fp32 embeddings on the CPU, in the order of ``texts``, computed without dropout.

        Texts are batched by token length, longest first, so batches carry
        little padding and the largest one (the memory peak) comes first.
        ``prompts`` overrides the encoder's own, for a source trained with other prefixes.
        """
        if not texts:
            return torch.empty(0, self.dimension)
        was_training = self.training
        self.eval()
        try:
            return self._encode([(prompts or self.prompts).format(text, kind) for text in texts], batch_size)
        finally:
            self.train(was_training)

    def _encode(self, texts: list[str], batch_size: int) -> torch.Tensor:
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        order = np.argsort([-len(row) for row in ids], kind="stable")
        embeddings = torch.empty(len(texts), self.dimension)
        for start in range(0, len(texts), batch_size):
            chosen = order[start : start + batch_size]
            batch = self.tokenizer.pad({"input_ids": [ids[i] for i in chosen]}, return_tensors="pt")
            with autocast(self.device):
                embedded = self(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            embeddings[torch.from_numpy(chosen)] = embedded.float().cpu()
        return embeddings

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]
        pooling = {
            "word_embedding_dimension": self.dimension,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        }
        sentence_transformers = {
            # "document" too: sentence-transformers' encode_document and MTEB look a passage's prompt up by it.
            "prompts": {"query": self.prompts.query, "passage": self.prompts.passage, "document": self.prompts.passage},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        }
        _write_json(directory / "modules.json", modules)
        _write_json(directory / _ST_CONFIG, sentence_transformers)
        _write_json(directory / _ST_MODULE_CONFIG, {"max_seq_length": self.max_length, "do_lower_case": False})
        _write_json(directory / "1_Pooling" / "config.json", pooling)
        (directory / "2_Normalize").mkdir(exist_ok=True)


def _optional_json(name_or_path: str, filename: str) -> dict:
    path = cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False)
    return json.loads(Path(path).read_text(encoding="utf-8")) if path else {}


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
