"""Started by tests/test_distributed.py under torchrun (2 CPU processes over gloo): DeepSpeed ZeRO-3 shards
the tiny model, with non-zero LoRA adapters, and the policy is then saved as a launched stage saves it:
every rank gathers, the main process writes. Usage: zero3_save_worker.py OUT_DIR"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from harness.config import ModelConfig
from harness.models import load_causal_lm, load_tokenizer, model_path

TINY = ModelConfig(source="tiny-random-llama", dtype="float32", max_length=256)


def lora_policy():
    """The tiny model with seeded, non-zero LoRA adapters (at init they are zero and merging is a no-op)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    policy = get_peft_model(load_causal_lm(model_path(TINY), TINY, "cpu"),
                            LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            param.data.normal_(std=0.1)
    return policy


def main(out: Path) -> None:
    import deepspeed
    from accelerate import PartialState

    import harness.training
    from harness._stage_worker import _save_on_main_process_only

    deepspeed.init_distributed(dist_backend="gloo")
    PartialState(cpu=True)
    _save_on_main_process_only()
    policy = lora_policy()
    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": 3}, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}
    deepspeed.initialize(model=policy, model_parameters=[p for p in policy.parameters() if p.requires_grad],
                         config=config)
    shards = {"sharded": sum(p.numel() == 0 for p in policy.parameters()), "parameters": len(list(policy.parameters()))}
    harness.training.save_merged(policy, load_tokenizer(model_path(TINY), TINY), out / "policy")
    (out / f"rank-{torch.distributed.get_rank()}.json").write_text(json.dumps(shards))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
