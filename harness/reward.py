"""Scoring conversations with a reward model (a sequence classifier with one output)."""

from __future__ import annotations

from collections.abc import Sequence

from harness.config import ModelConfig
from harness.models import load_tokenizer, torch_dtype


class RewardScorer:
    """``score(conversations) -> rewards``; each conversation ends with the assistant reply being judged."""

    def __init__(self, model_path: str, model_cfg: ModelConfig, device: str, batch_size: int = 8):
        from transformers import AutoModelForSequenceClassification

        self.tokenizer = load_tokenizer(model_path, model_cfg)
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model_path, num_labels=1, dtype=torch_dtype(model_cfg.dtype, device),
            trust_remote_code=model_cfg.trust_remote_code,
        ).to(device).eval()
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = device
        self.batch_size = batch_size

    def score(self, conversations: Sequence[list[dict]], progress=None) -> list[float]:
        import torch

        texts = [self.tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
        # Longest first, so padding is small within a batch and an out-of-memory error shows up at once.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        rewards = [0.0] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            inputs = self.tokenizer(
                [texts[i] for i in chunk], return_tensors="pt", padding=True, truncation=True,
                add_special_tokens=False,
            ).to(self.device)
            with torch.no_grad():
                logits = self.model(**inputs).logits[:, 0].float().tolist()
            for i, value in zip(chunk, logits):
                rewards[i] = value
            if progress is not None:
                progress.update(len(chunk))
        return rewards
