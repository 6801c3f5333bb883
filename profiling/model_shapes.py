"""The few config numbers the memory estimator needs, shipped so that an estimate needs no download.

Each entry copies fields of the model's Hugging Face ``config.json``; the source is named beside it.
Parameter counts are computed from these numbers (``ModelShape.parameters``), not copied.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only Llama-style transformer, as far as memory is concerned."""

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    tie_word_embeddings: bool
    source: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def kv_dim(self) -> int:
        """Width of the key (and of the value) projection: grouped-query attention shrinks it."""
        return self.num_kv_heads * self.head_dim

    def layer_parameters(self) -> int:
        h, i, kv = self.hidden_size, self.intermediate_size, self.kv_dim
        attention = h * h + 2 * h * kv + h * h  # q, k, v, o (no biases in Llama)
        mlp = 3 * h * i  # gate, up, down (SwiGLU)
        return attention + mlp + 2 * h  # two RMSNorm weights

    def causal_lm_parameters(self) -> int:
        """Embedding, layers, final norm and (unless tied to the embedding) the LM head."""
        embedding = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embedding
        return embedding + self.num_layers * self.layer_parameters() + self.hidden_size + head

    def classifier_parameters(self) -> int:
        """The same backbone with a one-output score head instead of the LM head (reward / value model)."""
        embedding = self.vocab_size * self.hidden_size
        return embedding + self.num_layers * self.layer_parameters() + self.hidden_size + self.hidden_size

    def lora_parameters(self, rank: int, targets: str = "all-linear") -> int:
        """LoRA adds rank * (in + out) per adapted linear layer; "all-linear" (peft) adapts every linear
        layer of the blocks (the LM head excluded); "attention" adapts q, k, v and o only."""
        h, i, kv = self.hidden_size, self.intermediate_size, self.kv_dim
        attention = (h + h) + 2 * (h + kv) + (h + h)
        mlp = 3 * (h + i)
        if targets == "all-linear":
            per_layer = attention + mlp
        elif targets == "attention":
            per_layer = attention
        else:
            raise ValueError(f"lora targets must be 'all-linear' or 'attention'; found {targets!r}")
        return self.num_layers * rank * per_layer

    @classmethod
    def from_hf_config(cls, name: str, config: dict, source: str = "") -> ModelShape:
        """From a ``config.json`` dict; a missing field is named in the error."""
        try:
            heads = config["num_attention_heads"]
            return cls(
                name=name,
                vocab_size=config["vocab_size"],
                hidden_size=config["hidden_size"],
                intermediate_size=config["intermediate_size"],
                num_layers=config["num_hidden_layers"],
                num_heads=heads,
                num_kv_heads=config.get("num_key_value_heads") or heads,
                tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                source=source,
            )
        except KeyError as err:
            raise ValueError(f"model config '{name}' ({source or 'dict'}): missing field {err.args[0]!r}") from None


MODEL_SHAPES: dict[str, ModelShape] = {
    shape.name: shape
    for shape in (
        ModelShape("llama-2-7b", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32,
                   num_heads=32, num_kv_heads=32, tie_word_embeddings=False,
                   source="meta-llama/Llama-2-7b-hf config.json"),
        ModelShape("smollm2-135m", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
                   num_heads=9, num_kv_heads=3, tie_word_embeddings=True,
                   source="HuggingFaceTB/SmolLM2-135M-Instruct config.json"),
        ModelShape("tiny-random-llama", vocab_size=49152, hidden_size=64, intermediate_size=128, num_layers=2,
                   num_heads=4, num_kv_heads=4, tie_word_embeddings=True,
                   source="rsdpo-harness smoke model (harness/models.py: hidden 64, 2 layers, SmolLM2 vocabulary)"),
    )
}
# The names the harness's model.source uses, for convenience.
ALIASES = {"meta-llama/Llama-2-7b-hf": "llama-2-7b", "smollm2-135m-instruct": "smollm2-135m"}


def model_shape(name: str) -> ModelShape:
    key = ALIASES.get(name, name)
    if key not in MODEL_SHAPES:
        raise ValueError(f"no shipped config for model '{name}'; known: {', '.join(MODEL_SHAPES)}")
    return MODEL_SHAPES[key]
