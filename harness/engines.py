"""Generation engines: ``generate(conversations, n, sampling) -> n completions per conversation``.

``hf`` runs transformers' ``generate`` (CPU or GPU). Every batch is seeded from (seed, batch number), so
a batch gives the same completions whether a run goes straight through or resumes after a kill.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from harness.config import ModelConfig
from harness.models import load_causal_lm, load_tokenizer


@dataclass
class SamplingConfig:
    """How responses are sampled. Defaults: the paper's sampling of k responses per prompt (T=1.0 would be
    plain ancestral sampling; 0.7 with top_p 1.0 is a common choice for diverse yet fluent samples)."""

    temperature: float = field(default=0.7, metadata={"help": "softmax temperature; 0 means greedy"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    max_new_tokens: int = field(default=256, metadata={"help": "longest response, in tokens"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call (each with its n samples)"})


@dataclass
class Completion:
    text: str
    token_count: int
    finish_reason: str  # "stop": the model ended it (EOS); "length": cut at max_new_tokens


class HFEngine:
    """transformers ``generate`` over batches of chat prompts, left-padded."""

    name = "hf"

    def __init__(self, model, tokenizer, device: str):
        """An engine over a model already in memory (PPO's live policy); ``load`` reads one from disk."""
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.tokenizer.padding_side = "left"  # decoder-only: new tokens follow the prompt directly

    @classmethod
    def load(cls, model_path: str, model_cfg: ModelConfig, device: str) -> HFEngine:
        return cls(load_causal_lm(model_path, model_cfg, device).eval(), load_tokenizer(model_path, model_cfg), device)

    def generate_ids(self, conversations: list[list[dict]], n: int, sampling: SamplingConfig):
        """(prompt inputs, prompt + completion token ids) for one batch: for callers that need the tokens."""
        import torch

        texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in conversations]
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        greedy = sampling.temperature <= 0
        with torch.no_grad():
            output = self.model.generate(
                **inputs,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=not greedy,
                temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p,
                num_return_sequences=n,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return inputs, output

    def generate_batches(
        self, conversations: list[list[dict]], n: int, sampling: SamplingConfig, seed: int, start_batch: int = 0
    ) -> Iterator[tuple[int, list[list[Completion]]]]:
        """Yield (batch number, n completions for each conversation of the batch), from ``start_batch`` on."""
        import torch

        size = sampling.batch_size
        for number in range(start_batch, (len(conversations) + size - 1) // size):
            batch = conversations[number * size:(number + 1) * size]
            torch.manual_seed(seed * 1_000_003 + number)
            inputs, output = self.generate_ids(batch, n, sampling)
            new_tokens = output[:, inputs["input_ids"].shape[1]:]
            completions = [self._completion(row) for row in new_tokens]
            yield number, [completions[i * n:(i + 1) * n] for i in range(len(batch))]

    def generate(self, conversations: list[list[dict]], n: int, sampling: SamplingConfig, seed: int,
                 desc: str = "generate") -> list[list[Completion]]:
        batches = self.generate_batches(conversations, n, sampling, seed)
        total = (len(conversations) + sampling.batch_size - 1) // sampling.batch_size
        return [group for _, groups in tqdm(batches, total=total, desc=desc, unit="batch") for group in groups]

    def _completion(self, tokens) -> Completion:
        eos = self.tokenizer.eos_token_id
        ids = tokens.tolist()
        if eos in ids:
            end = ids.index(eos)
            return Completion(self.tokenizer.decode(ids[:end], skip_special_tokens=True), end + 1, "stop")
        return Completion(self.tokenizer.decode(ids, skip_special_tokens=True), len(ids), "length")
