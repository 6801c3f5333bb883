"""The analytic memory estimator against cases worked out by hand (numbers in the comments)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from profiling.batch_lengths import longest_batch, padded_lengths, trainer_batches
from profiling.estimator import (
    TrainingSetup,
    Workload,
    activation_elements_per_token_layer,
    estimate_method,
    fused_loss_head,
    method_peak,
    trainable_states,
    training_activations,
)
from profiling.model_shapes import MODEL_SHAPES, ModelShape, model_shape

# A toy shape small enough to count by hand: h=4, I=8, 2 layers, 2 heads, 1 kv head (kv_dim 2), vocab 10.
TOY = ModelShape("toy", vocab_size=10, hidden_size=4, intermediate_size=8, num_layers=2, num_heads=2,
                 num_kv_heads=1, tie_word_embeddings=False)


def test_parameter_counts_by_hand():
    # layer: q 16 + k 8 + v 8 + o 16 = 48; mlp 3*4*8 = 96; norms 8 -> 152. embedding 40, head 40, final norm 4.
    assert TOY.layer_parameters() == 152
    assert TOY.causal_lm_parameters() == 40 + 2 * 152 + 4 + 40
    assert TOY.classifier_parameters() == 40 + 2 * 152 + 4 + 4
    # LoRA r=2: q 2*(4+4) + k 2*(4+2) + v 2*(4+2) + o 2*(4+4) + 3 mlp * 2*(4+8) = 16+12+12+16+72 = 128 per layer
    assert TOY.lora_parameters(2) == 2 * 128
    assert TOY.lora_parameters(2, "attention") == 2 * 56


def test_published_parameter_counts():
    assert round(model_shape("llama-2-7b").causal_lm_parameters() / 1e6) == 6738  # "7B": 6,738,415,616
    assert model_shape("smollm2-135m-instruct").causal_lm_parameters() == 134_515_008  # 538 MB in fp32 (FACTS.md)
    with pytest.raises(ValueError, match="no shipped config for model 'gpt-5'; known: llama-2-7b"):
        model_shape("gpt-5")


def test_from_hf_config_names_the_missing_field():
    with pytest.raises(ValueError, match=r"model config 'x' \(c.json\): missing field 'hidden_size'"):
        ModelShape.from_hf_config("x", {"num_attention_heads": 2, "vocab_size": 3}, "c.json")


def test_zero_paper_16_bytes_per_parameter():
    # ZeRO section 3.1: mixed-precision Adam is 2 + 2 + 12 bytes per parameter; 7.5B on 64 GPUs, stage 1/2/3
    psi = 7.5e9
    total = sum(trainable_states(int(psi), TrainingSetup(precision="bf16-mixed")).values())
    assert total == 16 * int(psi)  # the paper's 120 GB
    for stage, expected_gb in ((1, 31.4), (2, 16.6), (3, 1.88)):  # the paper's Figure 1 numbers
        per_gpu = sum(trainable_states(int(psi), TrainingSetup(precision="bf16-mixed", zero_stage=stage, gpus=64)).values())
        assert per_gpu / 1e9 == pytest.approx(expected_gb, rel=0.01)
    assert sum(trainable_states(10, TrainingSetup(precision="fp32")).values()) == 160
    assert sum(trainable_states(10, TrainingSetup(precision="bf16")).values()) == 80
    assert sum(trainable_states(10, TrainingSetup(precision="fp32", optimizer="sgd")).values()) == 80


def test_activation_counts_by_hand():
    # full: 11h + 4I = 44 + 32 = 76 elements per token and layer; LoRA r=2 with dropout: 12h + 4I + 7r = 94
    assert activation_elements_per_token_layer(TOY, lora=False, lora_r=2, lora_dropout=0.1) == 76
    assert activation_elements_per_token_layer(TOY, lora=True, lora_r=2, lora_dropout=0.1) == 94
    assert activation_elements_per_token_layer(TOY, lora=True, lora_r=2, lora_dropout=0.0) == 36 + 32 + 14
    fp32 = TrainingSetup(precision="fp32")
    # 3 tokens x 2 layers x 76 x 4 bytes
    assert training_activations(TOY, fp32, 3, trained_with_lora=True) == 3 * 2 * 76 * 4
    # LoRA adds one-byte dropout masks for 6h + I = 32 elements per token and layer
    lora = TrainingSetup(precision="fp32", lora=True, lora_r=2, lora_dropout=0.1)
    assert training_activations(TOY, lora, 3, trained_with_lora=True) == 3 * 2 * (94 * 4 + 32)
    # checkpointing keeps each layer's input (h) and recomputes one layer: 3 * (2*4*2 + 76*2) in bf16
    ckpt = TrainingSetup(precision="bf16", gradient_checkpointing=True)
    assert training_activations(TOY, ckpt, 3, trained_with_lora=True) == 3 * (2 * 4 * 2 + 76 * 2)


def test_fused_head_tiles():
    big = MODEL_SHAPES["smollm2-135m"]
    # CPU: 10 fp32 tiles of min(tokens, 4096) x min(vocab, 32768); CUDA: 2
    assert fused_loss_head(big, TrainingSetup(device="cpu"), 100) == 10 * 100 * 32768 * 4
    assert fused_loss_head(big, TrainingSetup(device="cuda"), 10_000) == 2 * 4096 * 32768 * 4
    assert fused_loss_head(TOY, TrainingSetup(device="cpu"), 5) == 10 * 5 * 10 * 4


def test_dpo_phase_by_hand():
    # fp32 full fine-tuning on CUDA, 1 pair of 3 tokens -> 6 tokens; no baseline.
    setup = TrainingSetup(precision="fp32", device="cuda")
    (phase,) = estimate_method("dpo", TOY, setup, Workload(train_batch=1, train_seq_len=3))
    params = TOY.causal_lm_parameters()  # 388
    assert phase.resident == {"policy weights": 4 * params, "policy gradients": 4 * params,
                              "policy optimizer states": 8 * params, "reference weights": 4 * params}
    activations = 6 * 2 * 76 * 4  # 3648
    head = 2 * 6 * 10 * 4  # 480
    assert phase.transient == {"activations + loss head": activations + head, "optimizer step buffer": 4 * params}
    assert phase.peak_bytes == 20 * params + activations + head
    # precomputed reference log-probs, or LoRA (adapters off), drop the reference copy
    (pre,) = estimate_method("dpo", TOY, setup, Workload(train_batch=1, train_seq_len=3, dpo_precompute_ref=True))
    assert "reference weights" not in pre.resident
    (lora,) = estimate_method("dpo", TOY, TrainingSetup(precision="fp32", lora=True, lora_r=2), Workload(1, 3))
    assert "reference weights" not in lora.resident
    assert lora.resident["policy weights (frozen base)"] == 4 * params
    assert lora.resident["policy LoRA optimizer states"] == 8 * TOY.lora_parameters(2)


def test_rsdpo_generation_phase_by_hand():
    # 2 prompts x k=3 = 6 sequences of 5 prompt + 4 new tokens in bf16, baseline 1000 bytes
    setup = TrainingSetup(precision="bf16", baseline_bytes=1000)
    work = Workload(generation_prompts=2, samples_per_prompt=3, prompt_tokens=5, new_tokens=4)
    generation, scoring, training = estimate_method("rsdpo", TOY, setup, work)
    kv = 2 * 2 * 2 * 2 * 6 * 9  # k and v, 2 layers, kv_dim 2, 2 bytes, 6 sequences, 9 tokens = 864
    prefill = 6 * 5 * (4 + 24) * 2  # one layer's MLP intermediates: 1680
    logits = 3 * 6 * 10 * 4  # 720
    assert generation.peak_bytes == 1000 + 2 * TOY.causal_lm_parameters() + kv + prefill + logits
    assert scoring.resident["reward model weights"] == 2 * TOY.classifier_parameters()
    assert training.name == "training" and scoring.name == "scoring"


def test_ppo_holds_four_models():
    setup = TrainingSetup(precision="bf16-mixed")
    rollout, update = estimate_method("ppo", TOY, setup, Workload(ppo_rollout_batch=2, ppo_micro_batch=1,
                                                                  ppo_prompt_tokens=3, ppo_new_tokens=2))
    names = set(update.resident)
    assert {"policy weights", "reference weights", "value model weights", "reward model weights"} <= names
    # value model trained fully: 16 bytes per classifier parameter, as the policy's 16 per LM parameter
    value = sum(v for k, v in update.resident.items() if k.startswith("value model"))
    assert value == 16 * TOY.classifier_parameters()
    # PPO's peak exceeds DPO's on the same model and precision: two trained models and two frozen ones
    ppo_peak = method_peak([rollout, update])
    assert ppo_peak > method_peak(estimate_method("dpo", TOY, setup, Workload(1, 5)))


def test_ppo_under_zero3_shards_only_its_engine_and_gathers_it_to_generate():
    work = Workload(ppo_rollout_batch=2, ppo_micro_batch=1, ppo_prompt_tokens=3, ppo_new_tokens=2)
    plain, zero3 = (estimate_method("ppo", TOY, TrainingSetup(precision="bf16-mixed", zero_stage=stage, gpus=4), work)
                    for stage in (2, 3))
    lm, classifier = TOY.causal_lm_parameters(), TOY.classifier_parameters()  # 428 and 392
    # the policy's and value model's 16-bit weights are sharded in the engine: 2 bytes / 4 GPUs each
    assert zero3[1].resident["policy weights"] == 2 * lm / 4 and zero3[1].resident["value model weights"] == 2 * classifier / 4
    # reference and reward model live outside the engine: whole on every GPU, as without ZeRO-3
    for name in ("reference weights", "reward model weights"):
        assert zero3[0].resident[name] == plain[0].resident[name] == 2 * (lm if name.startswith("ref") else classifier)
    # generating gathers the other 3 GPUs' shares of both engine models: 3/4 of their 16-bit weights
    gathered = zero3[0].transient["KV cache + response logits"] - plain[0].transient["KV cache + response logits"]
    assert gathered == pytest.approx(2 * (lm + classifier) * 3 / 4)


def test_bad_setup_and_method_fail_clearly():
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16-mixed, bf16; found 'fp16'"):
        TrainingSetup(precision="fp16")
    with pytest.raises(ValueError, match="zero_stage must be 0, 1, 2 or 3"):
        TrainingSetup(zero_stage=4)
    with pytest.raises(ValueError, match="no memory model for method 'kto'"):
        estimate_method("kto", TOY, TrainingSetup(), Workload())


def test_estimate_cli_paper_scale_without_gpu_or_download(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "harness", "profile", "--estimate", "--model", "llama-2-7b", "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["produced_by"]["parameters"] == model_shape("llama-2-7b").causal_lm_parameters()
    assert set(data["peaks_bytes"]) == {"rs", "ppo", "dpo", "rsdpo"}
    # bf16-mixed full fine-tuning of 6.74B parameters needs at least 16 bytes each in every trained phase
    assert data["peaks_bytes"]["dpo"] > 16 * 6.7e9
    assert data["ppo_over_rsdpo_peak"] > 1
    text = subprocess.run(
        [sys.executable, "-m", "harness", "profile", "--estimate", "--model", "llama-2-7b", "--gpus", "8",
         "--zero-stage", "3"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert text.returncode == 0 and "8 GPU(s), ZeRO stage 3" in text.stdout and "PPO / RS-DPO peak" in text.stdout


def test_trainer_batches_follow_the_order_across_epochs():
    # 5 records, batches of 2: an epoch is [0,1] [2,3] [4] (drop_last False); the next epoch starts afresh
    assert trainer_batches(5, 2, 4) == [[0, 1], [2, 3], [4], [0, 1]]
    reversed_order = lambda epoch: [4, 3, 2, 1, 0] if epoch == 0 else [0, 1, 2, 3, 4]  # noqa: E731
    assert trainer_batches(5, 2, 5, reversed_order) == [[4, 3], [2, 1], [0], [0, 1], [2, 3]]
    assert trainer_batches(0, 2, 3) == [] and trainer_batches(3, 2, 0) == []
    with pytest.raises(ValueError, match="not a permutation of 3 records"):
        trainer_batches(3, 2, 1, lambda epoch: [0, 0, 1])
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        trainer_batches(3, 0, 1)


def test_longest_batch_is_the_longest_drawn_record_not_the_longest_in_the_data():
    lengths = [10, 254, 30, 40, 50, 60]
    batches = trainer_batches(6, 2, 2, lambda epoch: [2, 3, 4, 5, 0, 1])  # two steps: records 2,3 then 4,5
    assert padded_lengths(lengths, batches) == [40, 60]
    assert longest_batch(lengths, batches) == 60  # record 1 (254 tokens) is never drawn
    assert longest_batch(lengths, trainer_batches(6, 2, 3, lambda epoch: [2, 3, 4, 5, 0, 1])) == 254
    assert longest_batch(lengths, []) == 0


def test_scoring_phase_uses_its_own_padded_length():
    setup = TrainingSetup(precision="fp32")
    work = Workload(score_batch=2, prompt_tokens=5, new_tokens=4)
    (_, scoring, _) = estimate_method("rs", TOY, setup, work)
    assert scoring.workload["tokens"] == 2 * 9  # no measured length: the bound prompt + new tokens
    (_, shorter, _) = estimate_method("rs", TOY, setup, Workload(score_batch=2, prompt_tokens=5, new_tokens=4,
                                                                 score_seq_len=6))
    assert shorter.workload["tokens"] == 12
    # no-grad forward: 2h + 3I elements per token in fp32
    assert scoring.peak_bytes - shorter.peak_bytes == 6 * (2 * 4 + 3 * 8) * 4
