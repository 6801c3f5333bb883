"""PPO for language models (RLHF), one iteration read top to bottom: rollout, rewards, advantages, then
several PPO epochs over minibatches. Follows "The N Implementation Details of RLHF with PPO" (Huang et al.)
and TRL's former PPOv2 trainer; the math lives in ``methods.ppo_math``.

Models: the policy (trainable; LoRA optional), a frozen reference (the SFT policy; with LoRA the policy
with its adapters disabled), a value model (trainable, initialised from the reward model) and a reward
function (the frozen reward model, or any callable in tests).

Processes: the loop runs through ``accelerate``, in one process or in N launched by ``harness run
--launcher accelerate`` (DDP, or DeepSpeed ZeRO-2/3). ``rollout_batch_size`` and ``mini_batch_size`` are
global: each process rolls out its share of every prompt batch and trains on its own rollouts, and the
gradients are averaged across processes. Advantages are whitened per process, as TRL's PPOv2 did; the
logged statistics are averaged over all processes.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from harness.engines import HFEngine, SamplingConfig
from harness.method import StageError
from harness.store import atomic_path
from methods.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    apply_missing_eos_penalty,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    gae,
    kl_penalized_rewards,
    logprobs_from_logits,
    masked_mean,
    masked_whiten,
    response_mask,
)

RewardFn = Callable[[list[list[dict]], list[str]], list[float]]  # (prompts, response texts) -> scores
CHECKPOINT = "ppo_state.pt"


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    # Prompts are left-padded: positions must count real tokens only, as generate() did.
    return (attention_mask.cumsum(1) - 1).clamp(min=0)


def response_logits(model, input_ids, attention_mask, context_length: int) -> torch.Tensor:
    """Logits that predict each response token (the last prompt position predicts the first one)."""
    # Only the positions that predict response tokens go through the LM head: with a 49k vocabulary the
    # head costs more than the rest of a small model.
    keep = input_ids.shape[1] - context_length + 1
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                logits_to_keep=keep)
    return out.logits[:, :-1]


def response_values(value_model, input_ids, attention_mask, context_length: int) -> torch.Tensor:
    """V(state before each response token): the value head on every position, not only the last."""
    backbone = getattr(value_model, value_model.base_model_prefix)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids(attention_mask)).last_hidden_state
    return value_model.score(hidden).squeeze(-1)[:, context_length - 1:-1].float()


class PolicyAndValue(torch.nn.Module):
    """The policy and the value model as one module, so that one DDP/DeepSpeed engine and one optimizer
    hold both (accelerate prepares one DeepSpeed model per engine; TRL's PPOv2 did the same)."""

    is_gradient_checkpointing = False  # read by TRL's unwrap_model_for_generation

    def __init__(self, policy, value_model):
        super().__init__()
        self.policy, self.value_model = policy, value_model
        self.config = policy.config  # DeepSpeed's "auto" bucket sizes come from model.config.hidden_size

    def forward(self, input_ids, attention_mask, context_length: int, with_values: bool = True):
        logits = response_logits(self.policy, input_ids, attention_mask, context_length)
        if not with_values:
            return logits, None
        return logits, response_values(self.value_model, input_ids, attention_mask, context_length)


class PPOTrainer:
    def __init__(self, cfg, policy, ref_policy, value_model, tokenizer, reward_fn: RewardFn,
                 prompts: list[list[dict]], device: str, seed: int, checkpoint_dir: Path, engine=None):
        from accelerate import Accelerator

        self.cfg, self.policy, self.ref_policy, self.value_model = cfg, policy, ref_policy, value_model
        self.tokenizer, self.reward_fn, self.prompts, self.device, self.seed = tokenizer, reward_fn, prompts, device, seed
        self.checkpoint_dir = Path(checkpoint_dir)
        self.accelerator = Accelerator(cpu=device == "cpu", gradient_accumulation_steps=cfg.gradient_accumulation_steps)
        self.local_rollouts, self.local_mini_batch, self.micro_batch = local_batch_sizes(
            cfg, self.accelerator.num_processes)
        deepspeed = getattr(self.accelerator.state, "deepspeed_plugin", None)
        if deepspeed is not None:
            # Without a dataloader accelerate cannot fill these "auto" values of the shipped ZeRO configs.
            deepspeed.deepspeed_config.update(train_micro_batch_size_per_gpu=self.micro_batch,
                                              gradient_clipping=cfg.max_grad_norm)
        model = PolicyAndValue(policy, value_model)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                      lr=cfg.learning_rate, eps=1e-5)  # PPOv2's eps
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.adaptive_kl
                       else FixedKLController(cfg.kl_coef))
        # Rollouts go through the generation engine: HF over the live policy (its weights are the engine's),
        # or a vLLM copy that gets the policy's weights after every update (``harness.engines.rollout_engine``).
        self.engine = engine or HFEngine(policy, tokenizer, device)
        self.sampling = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
        self.log: list[dict] = []
        self.start_step = 0
        self.resumed_from: int | None = None

    # ---------------------------------------------------------------------------------------- the loop

    def train(self) -> list[dict]:
        self._load_checkpoint()
        if self.resumed_from is not None:
            self._sync_engine()
        bar = tqdm(range(self.start_step, self.cfg.steps), initial=self.start_step, total=self.cfg.steps,
                   desc="ppo", unit="step", disable=not self.accelerator.is_main_process)
        for step in bar:
            batch = self._rollout(self._prompt_batch(step))
            stats = self._ppo_epochs(batch)
            self._sync_engine()
            stats.update(step=step + 1, **batch["stats"])
            self.kl_ctl.update(batch["stats"]["objective/kl"], self.cfg.rollout_batch_size)
            self.log.append(stats)
            bar.set_postfix(score=f"{stats['objective/scores']:.3f}", kl=f"{stats['objective/kl']:.3f}")
            if (step + 1) % self.cfg.save_steps == 0 or step + 1 == self.cfg.steps:
                self._save_checkpoint(step + 1)
        return self.log

    def _sync_engine(self) -> None:
        # A separate engine (vLLM) samples from its own copy of the weights: the next rollout must see this update.
        if hasattr(self.engine, "sync_weights"):
            self.engine.sync_weights(self.policy)

    def _prompt_batch(self, step: int) -> list[list[dict]]:
        # A seeded permutation per pass over the prompts: the same batches after a resume. Every process
        # draws the same global batch and takes its own slice of it.
        size = self.cfg.rollout_batch_size
        per_pass = max(1, len(self.prompts) // size)
        order = np.random.default_rng(self.seed + step // per_pass).permutation(len(self.prompts))
        start = (step % per_pass) * size
        batch = np.resize(order, start + size)[start:start + size]
        mine = batch.reshape(self.accelerator.num_processes, self.local_rollouts)[self.accelerator.process_index]
        return [self.prompts[i] for i in mine]

    # ------------------------------------------------------------------------- 1. rollout and rewards

    @torch.no_grad()
    def _rollout(self, prompts: list[list[dict]]) -> dict:
        from trl.models.utils import unwrap_model_for_generation

        cfg, tok = self.cfg, self.tokenizer
        self.model.eval()
        with unwrap_model_for_generation(self.model, self.accelerator):  # ZeRO-3: whole weights to generate
            query, output = self.engine.generate_ids(prompts, 1, self.sampling)
        context_length = query["input_ids"].shape[1]
        responses = output[:, context_length:]
        mask, has_eos = response_mask(responses, tok.eos_token_id, tok.pad_token_id)
        attention = torch.cat([query["attention_mask"], mask.long()], dim=1)

        logits, values = self.model(output, attention, context_length)
        logprobs = logprobs_from_logits(logits, responses, cfg.temperature)
        ref_logprobs = logprobs_from_logits(self._reference_logits(output, attention, context_length), responses,
                                            cfg.temperature)

        response_texts = [tok.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(responses, mask)]
        scores = torch.tensor(self.reward_fn(prompts, response_texts), dtype=torch.float32, device=self.device)
        scores = apply_missing_eos_penalty(scores, has_eos, cfg.missing_eos_penalty)
        rewards, kl = kl_penalized_rewards(scores, logprobs, ref_logprobs, mask, self.kl_ctl.value, cfg.kl_estimator)
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
        advantages = masked_whiten(advantages, mask)
        gather = self.accelerator.gather  # statistics over every process's rollouts
        kl_per_sequence = gather(kl.sum(1))  # summed over its tokens
        return {
            "queries": output, "attention": attention, "context_length": context_length, "responses": responses,
            "mask": mask, "logprobs": logprobs, "values": values, "advantages": advantages, "returns": returns,
            "stats": {
                "objective/scores": gather(scores).mean().item(),
                "objective/kl": kl_per_sequence.mean().item(),
                "objective/non_score_reward": (-self.kl_ctl.value * kl_per_sequence).mean().item(),
                "objective/kl_coef": self.kl_ctl.value,
                "val/response_length": gather(mask.sum(1).float()).mean().item(),
                "val/has_eos": gather(has_eos.float()).mean().item(),
            },
        }

    def _reference_logits(self, output, attention, context_length: int) -> torch.Tensor:
        if self.ref_policy is not None:
            return response_logits(self.ref_policy, output, attention, context_length)
        # With LoRA the reference is the policy with its adapters switched off: no second copy in memory.
        with self.policy.disable_adapter():
            return self.model(output, attention, context_length, with_values=False)[0]

    # --------------------------------------------------------------------------------- 2. PPO epochs

    def _ppo_epochs(self, batch: dict) -> dict:
        cfg, accelerator = self.cfg, self.accelerator
        size = len(batch["queries"])
        generator = torch.Generator().manual_seed(self.seed + len(self.log))
        totals: dict[str, list[float]] = {}
        self.model.train()
        for _ in range(cfg.num_ppo_epochs):
            for mini in torch.randperm(size, generator=generator).split(self.local_mini_batch):
                # gradient_accumulation_steps micro-batches per mini-batch: accelerate scales the loss,
                # syncs the gradients across processes on the last one, and only then steps.
                for index in mini.split(self.micro_batch):
                    with accelerator.accumulate(self.model):
                        stats = self._loss_and_backward(batch, index)
                        if accelerator.sync_gradients:
                            accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                        self.optimizer.step()
                        self.optimizer.zero_grad()
                    for name, value in stats.items():
                        totals.setdefault(name, []).append(value)
        names = sorted(totals)
        means = torch.tensor([np.mean(totals[name]) for name in names], device=accelerator.device)
        return dict(zip(names, accelerator.reduce(means, reduction="mean").tolist()))

    def _loss_and_backward(self, batch: dict, index: torch.Tensor) -> dict:
        cfg = self.cfg
        queries, attention = batch["queries"][index], batch["attention"][index]
        mask = batch["mask"][index]
        logits, values = self.model(queries, attention, batch["context_length"])
        logprobs = logprobs_from_logits(logits, batch["responses"][index], cfg.temperature)
        pg_loss, pg_stats = clipped_policy_loss(logprobs, batch["logprobs"][index], batch["advantages"][index],
                                                mask, cfg.cliprange)
        vf_loss, vf_stats = clipped_value_loss(values, batch["values"][index], batch["returns"][index], mask,
                                               cfg.cliprange_value)
        loss = pg_loss + cfg.vf_coef * vf_loss
        self.accelerator.backward(loss)
        with torch.no_grad():
            entropy = masked_mean(entropy_from_logits(logits, cfg.temperature), mask)
        return {
            "loss/policy": pg_loss.item(), "loss/value": vf_loss.item(),
            "policy/clipfrac": pg_stats["clipfrac"].item(), "policy/approx_kl": pg_stats["approx_kl"].item(),
            "policy/entropy": entropy.item(), "val/clipfrac": vf_stats["vf_clipfrac"].item(),
        }

    # --------------------------------------------------------------------------------- checkpoints

    def _trainable_state(self) -> dict:
        return {
            "policy": {n: p.detach() for n, p in self.policy.named_parameters() if p.requires_grad},
            "value_model": self.value_model.state_dict(),
        }

    def _sharded(self) -> bool:
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type == DistributedType.DEEPSPEED

    def _save_checkpoint(self, step: int) -> None:
        state = {"step": step, "kl_coef": self.kl_ctl.value, "log": self.log}
        if self._sharded():
            # DeepSpeed splits the optimizer state (and under ZeRO-3 the weights): every process writes
            # its shards into state-<step>, which ppo_state.pt names once it is whole.
            state["state"] = f"state-{step}"
            self.accelerator.save_state(str(self.checkpoint_dir / state["state"]))
        else:
            state.update(self._trainable_state(), optimizer=self.optimizer.state_dict())
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            with atomic_path(self.checkpoint_dir / CHECKPOINT) as tmp:
                torch.save(state, tmp)
            for old in self.checkpoint_dir.glob("state-*"):
                if old.name != state.get("state"):
                    shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def _load_checkpoint(self) -> None:
        path = self.checkpoint_dir / CHECKPOINT
        if not path.exists():
            return
        state = torch.load(path, map_location=self.device, weights_only=True)
        if "state" in state:
            self.accelerator.load_state(str(self.checkpoint_dir / state["state"]))
        else:
            self.policy.load_state_dict(state["policy"], strict=False)
            self.value_model.load_state_dict(state["value_model"])
            self.optimizer.load_state_dict(state["optimizer"])
        self.kl_ctl.value = state["kl_coef"]
        self.log = state["log"]
        self.start_step = self.resumed_from = state["step"]


def local_batch_sizes(cfg, processes: int) -> tuple[int, int, int]:
    """(rollouts, mini-batch, micro-batch) per process: the global sizes must split evenly."""
    if cfg.mini_batch_size < 1 or cfg.rollout_batch_size % cfg.mini_batch_size:
        raise StageError(f"ppo.rollout_batch_size ({cfg.rollout_batch_size}) must be a multiple of "
                         f"ppo.mini_batch_size ({cfg.mini_batch_size})")
    if cfg.mini_batch_size % (processes * cfg.gradient_accumulation_steps):
        raise StageError(f"ppo.mini_batch_size ({cfg.mini_batch_size}) must be a multiple of processes x "
                         f"ppo.gradient_accumulation_steps ({processes} x {cfg.gradient_accumulation_steps})")
    mini = cfg.mini_batch_size // processes
    return cfg.rollout_batch_size // processes, mini, mini // cfg.gradient_accumulation_steps
