"""Analytic peak-memory estimate of each phase of RS, PPO, DPO and RS-DPO, per device.

A phase's peak is what stays resident through it (process baseline, weights, gradients, optimizer
states) plus the largest of its transient peaks (activations kept for the backward pass and the loss
head during a training step, or the optimizer step's buffer, or a generation's KV cache):

    peak = sum(resident) + max(transient)

Sources and the counts behind each term:

- Model states (Rajbhandari et al. 2020, ZeRO, arXiv 1910.02054, section 3.1): mixed-precision Adam keeps
  per trainable parameter 2 bytes of 16-bit weights, 2 of 16-bit gradients and K = 12 of fp32 master
  weights, momentum and variance: 16 bytes. fp32 training keeps 4 + 4 + 8 = 16 as well; pure bf16 keeps
  2 + 2 + 4. ZeRO stage 1 divides the K bytes by the GPU count, stage 2 also the gradients, stage 3 also
  the weights (frozen models too, as DeepSpeed shards them under stage 3). Not sharded: the phases that
  run once, in the harness process (sampling and scoring weights are whole), and the models our PPO keeps
  outside its DeepSpeed engine (reference and reward model). PPO's rollouts under stage 3 gather the
  engine's weights (policy and value model) whole for generation: a transient of the other ranks' shares.
- LoRA (Hu et al. 2021): rank * (in + out) trainable parameters per adapted layer; peft keeps the adapters
  in fp32 (4 + 4 + 8 bytes with Adam), the base weights stay frozen in the model's dtype.
- Activations (Korthikanti et al. 2022, arXiv 2205.05198, section 4.1: 34 s b h bytes per layer for GPT
  in 16 bit), recounted for Llama (SwiGLU MLP of width I, RMSNorm, no dropout, SDPA/flash attention so
  no s^2 term) in elements per token per layer:
    full fine-tuning: 11 h + 4 I   (norm inputs and outputs 4h; q/k/v input h; q, k, v repeated to all
                                    heads and the attention output 4h; o input h; MLP input h; gate, SiLU,
                                    up and down inputs 4I)
    LoRA (frozen base; PyTorch does not save a frozen linear layer's input):
                                    12 h + 4 I + 7 r, plus 6 h + I one-byte dropout masks
                                    (norm inputs 2h; attention 4h; gate, SiLU, up 3I; each adapter keeps
                                    its dropped-out input: 6h + I; and its rank-r output)
    gradient checkpointing: each layer keeps only its input (h), and one layer is recomputed at a time.
- Loss head: TRL 1.16 trainers project through the LM head in tiles (``add_fused_lm_head``: at most 4096
  tokens x 32768 vocabulary entries in fp32) and never hold the full logits. On CUDA the Triton kernels
  fold each tile in place (the tile and its gradient: 2 tiles). On CPU the torch fallback creates
  temporaries per tile; measured with the kernel alone (trl 1.16, torch 2.13 CPU; N=1024, V=49152):
  about 4-6 tiles in the forward and 10 in the backward, so 10. Without Triton (CPU) every position is
  scored, prompt and padding included, so the head sees all 2 x pairs x padded length tokens of a DPO
  batch. DPO with LoRA (trl 1.16 ``_compute_loss``): the reference is the same model with its adapters
  disabled (no copy); its no-grad forward runs after the policy's forward, while the policy's activations
  are alive, but its transient (forward tiles, one layer) is smaller than the backward's, so it adds
  nothing to the peak. Our PPO keeps the response logits:
  logits, their fp32 upcast, its gradient and the logits' gradient (2 x dtype + 8 bytes per entry).
- Optimizer step: torch's AdamW (foreach) allocates one fp32 buffer per trainable parameter (its
  denominator); activations are freed by then, so this competes with them, it does not add.
- Generation (HF ``generate``): KV cache 2 x layers x kv_dim x bytes per token for every sequence
  (prompts x samples per prompt), plus one layer's prefill activations and the last-token logits.
- On CPU the process itself (Python, torch, transformers, TRL) takes memory before any model loads:
  ``baseline_bytes``, measured rather than assumed (``harness profile`` measures it in a fresh process).

Token lengths (``Workload``): every sequence length is the length of the longest *padded batch* the phase
processes, not of the longest record in the data. Every trainer and engine here pads a batch to its own
longest record (TRL's ``DataCollatorForPreference`` and SFT collator, HF ``generate``, our PPO), after
truncating each record to the stage's ``max_length``, so the peak is set by the longest batch actually
drawn: with 2 steps of 4 DPO pairs that is the longest of 8 pairs, not of all 200. The caller computes it
with ``profiling.batch_lengths`` from the stage's records, tokenized with the run's tokenizer and truncated
as the trainer truncates, in the trainer's order (HF Trainer: ``torch.randperm`` seeded with
``data_seed + epoch``, as accelerate's ``SeedableRandomSampler``; PPO: its per-pass numpy permutation;
generation and scoring: file order). DPO's length is one side's: chosen and rejected of ``train_batch``
pairs form one batch of ``2 x train_batch`` sequences padded to the longest of them. Where a stage's records
do not exist yet (or were deleted), the caller falls back to an upper bound (prompt + ``max_new_tokens``)
and says so.

Everything here takes plain numbers; nothing of the harness is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from profiling.model_shapes import ModelShape

Precision = Literal["fp32", "bf16-mixed", "bf16"]
PRECISIONS = ("fp32", "bf16-mixed", "bf16")
OPTIMIZER_STATE_BYTES = {"adamw": 8, "sgd": 0}  # fp32 bytes per trainable parameter (Adam: m and v)
FUSED_HEAD_TOKENS, FUSED_HEAD_VOCAB = 4096, 32768  # trl/kernels/chunked_logprob.py tile shape (trl 1.16)
FUSED_HEAD_TILES = {"cuda": 2, "cpu": 10}  # live tiles at the head's peak (its backward); see the docstring


@dataclass(frozen=True)
class TrainingSetup:
    """How a model is trained and laid out across devices."""

    precision: Precision = field(default="bf16-mixed", metadata={"help": "fp32, bf16-mixed (ZeRO's 16 B/param) or bf16"})
    optimizer: Literal["adamw", "sgd"] = field(default="adamw", metadata={"help": "optimizer whose states are kept"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters; the base weights stay frozen"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout (> 0 keeps a dropped-out input copy)"})
    lora_targets: str = field(default="all-linear", metadata={"help": "'all-linear' or 'attention'"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "keep only layer inputs, recompute"})
    zero_stage: int = field(default=0, metadata={"help": "DeepSpeed ZeRO stage 0-3"})
    gpus: int = field(default=1, metadata={"help": "data-parallel devices the states are partitioned over"})
    baseline_bytes: int = field(default=0, metadata={"help": "memory the process holds before loading a model"})
    device: Literal["cuda", "cpu"] = field(default="cuda", metadata={"help": "where it runs (TRL's loss head differs)"})

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; found {self.precision!r}")
        if self.optimizer not in OPTIMIZER_STATE_BYTES:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZER_STATE_BYTES)}; found {self.optimizer!r}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"zero_stage must be 0, 1, 2 or 3; found {self.zero_stage!r}")
        if self.device not in FUSED_HEAD_TILES:
            raise ValueError(f"device must be 'cuda' or 'cpu'; found {self.device!r}")
        if self.gpus < 1:
            raise ValueError(f"gpus must be at least 1; found {self.gpus!r}")

    @property
    def dtype_bytes(self) -> int:
        """Bytes of a weight or activation element in the model's compute dtype."""
        return 4 if self.precision == "fp32" else 2


@dataclass
class Phase:
    """One phase of a method: what stays resident and the transient peaks it alternates between."""

    method: str
    name: str
    resident: dict[str, float]
    transient: dict[str, float]
    workload: dict = field(default_factory=dict)

    @property
    def peak_bytes(self) -> float:
        return sum(self.resident.values()) + max(self.transient.values(), default=0.0)

    def to_dict(self) -> dict:
        return {"method": self.method, "phase": self.name, "peak_bytes": round(self.peak_bytes),
                "resident": {k: round(v) for k, v in self.resident.items()},
                "transient": {k: round(v) for k, v in self.transient.items()}, "workload": self.workload}


# ------------------------------------------------------------------------------------------ model states


def _shard(bytes_: float, setup: TrainingSetup, from_stage: int) -> float:
    """ZeRO partitions a state over the GPUs from ``from_stage`` on (1: optimizer, 2: grads, 3: weights)."""
    return bytes_ / setup.gpus if setup.zero_stage >= from_stage else bytes_


def frozen_weights(params: int, setup: TrainingSetup) -> float:
    return _shard(params * setup.dtype_bytes, setup, 3)


def unsharded(setup: TrainingSetup) -> TrainingSetup:
    """The setup of a model no DeepSpeed engine holds: its weights stay whole on every device."""
    return replace(setup, zero_stage=0)


def trainable_states(params: int, setup: TrainingSetup) -> dict[str, float]:
    """Weights, gradients and optimizer states of fully trained parameters (ZeRO section 3.1)."""
    states = OPTIMIZER_STATE_BYTES[setup.optimizer]
    if setup.precision == "fp32":
        weight, grad, optimizer = 4, 4, states
    elif setup.precision == "bf16-mixed":
        weight, grad, optimizer = 2, 2, states + 4  # + fp32 master weights
    else:
        weight, grad, optimizer = 2, 2, states // 2  # states kept in bf16
    return {
        "weights": _shard(params * weight, setup, 3),
        "gradients": _shard(params * grad, setup, 2),
        "optimizer states": _shard(params * optimizer, setup, 1),
    }


def trained_model_states(shape: ModelShape, setup: TrainingSetup, prefix: str, classifier: bool = False) -> dict:
    """The states of one trained model, fully or with LoRA (fp32 adapters, frozen base)."""
    params = shape.classifier_parameters() if classifier else shape.causal_lm_parameters()
    if not setup.lora:
        return {f"{prefix} {k}": v for k, v in trainable_states(params, setup).items()}
    adapters = shape.lora_parameters(setup.lora_r, setup.lora_targets)
    fp32_adapters = TrainingSetup(**{**setup.__dict__, "precision": "fp32"})
    out = {f"{prefix} weights (frozen base)": frozen_weights(params, setup)}
    out.update({f"{prefix} LoRA {k}": v for k, v in trainable_states(adapters, fp32_adapters).items()})
    return out


def trainable_parameters(shape: ModelShape, setup: TrainingSetup, classifier: bool = False) -> int:
    if setup.lora:
        return shape.lora_parameters(setup.lora_r, setup.lora_targets)
    return shape.classifier_parameters() if classifier else shape.causal_lm_parameters()


def optimizer_step_buffer(trainable: int, setup: TrainingSetup) -> float:
    """torch AdamW (foreach) allocates one fp32 buffer of the trainable parameters during the step."""
    return 0.0 if setup.optimizer == "sgd" else _shard(trainable * 4, setup, 1)


# ------------------------------------------------------------------------------------------- activations


def activation_elements_per_token_layer(shape: ModelShape, lora: bool, lora_r: int, lora_dropout: float) -> float:
    """Elements kept for the backward pass per token and layer (see the module docstring)."""
    h, i = shape.hidden_size, shape.intermediate_size
    if not lora:
        return 11 * h + 4 * i
    if lora_dropout > 0:
        return 12 * h + 4 * i + 7 * lora_r
    return 9 * h + 4 * i + 7 * lora_r  # without dropout an adapter shares its input with the frozen layer


def training_activations(shape: ModelShape, setup: TrainingSetup, tokens: int, trained_with_lora: bool) -> float:
    """Bytes kept for the backward pass of ``tokens`` (micro-batch sequences x padded length)."""
    lora = setup.lora and trained_with_lora
    per_layer = activation_elements_per_token_layer(shape, lora, setup.lora_r, setup.lora_dropout)
    per_layer_bytes = per_layer * setup.dtype_bytes
    if lora and setup.lora_dropout > 0:
        per_layer_bytes += 6 * shape.hidden_size + shape.intermediate_size  # bool dropout masks
    if setup.gradient_checkpointing:
        return tokens * (shape.num_layers * shape.hidden_size * setup.dtype_bytes + per_layer_bytes)
    return tokens * shape.num_layers * per_layer_bytes


def fused_loss_head(shape: ModelShape, setup: TrainingSetup, tokens: int) -> float:
    """TRL's tiled LM head: fp32 tiles of at most 4096 tokens x 32768 vocabulary entries."""
    tile = min(tokens, FUSED_HEAD_TOKENS) * min(shape.vocab_size, FUSED_HEAD_VOCAB) * 4
    return FUSED_HEAD_TILES[setup.device] * tile


def full_logits_head(shape: ModelShape, setup: TrainingSetup, tokens: int) -> float:
    """Materialized logits with grad: logits, their fp32 upcast, its gradient, the logits' gradient."""
    return tokens * shape.vocab_size * (2 * setup.dtype_bytes + 8)


def generation_transient(shape: ModelShape, setup: TrainingSetup, sequences: int, prompt_tokens: int,
                         new_tokens: int) -> float:
    """KV cache of every sequence at full length, one layer's prefill activations, last-token logits."""
    kv_cache = 2 * shape.num_layers * shape.kv_dim * setup.dtype_bytes * sequences * (prompt_tokens + new_tokens)
    prefill = sequences * prompt_tokens * (shape.hidden_size + 3 * shape.intermediate_size) * setup.dtype_bytes
    logits = 3 * sequences * shape.vocab_size * 4  # fp32 scores, processed scores, probabilities
    return kv_cache + prefill + logits


def forward_transient(shape: ModelShape, setup: TrainingSetup, tokens: int) -> float:
    """A no-grad forward: the hidden states plus one layer's MLP intermediates at a time."""
    return tokens * (2 * shape.hidden_size + 3 * shape.intermediate_size) * setup.dtype_bytes


# ---------------------------------------------------------------------------------------------- phases


@dataclass(frozen=True)
class Workload:
    """How much each phase handles at once (per device). Sequence lengths are the longest padded batch
    the phase processes, in tokens (see the module docstring)."""

    train_batch: int = 8  # sequences (SFT/RS) or pairs (DPO) per micro-batch
    train_seq_len: int = 1024  # DPO: prompt + completion of one side
    generation_prompts: int = 8  # prompts per generate call
    samples_per_prompt: int = 16  # k
    prompt_tokens: int = 256
    new_tokens: int = 256
    score_batch: int = 8
    ppo_rollout_batch: int = 64
    ppo_micro_batch: int = 16
    ppo_prompt_tokens: int = 256
    ppo_new_tokens: int = 128
    dpo_precompute_ref: bool = False
    score_seq_len: int = 0  # longest padded scoring batch; 0: prompt_tokens + new_tokens (the upper bound)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def baseline(setup: TrainingSetup) -> dict[str, float]:
    return {"process baseline": float(setup.baseline_bytes)} if setup.baseline_bytes else {}


def generation_phase(method: str, shape: ModelShape, setup: TrainingSetup, work: Workload) -> Phase:
    sequences = work.generation_prompts * work.samples_per_prompt
    return Phase(
        method, "generation",
        {**baseline(setup), "SFT policy weights": frozen_weights(shape.causal_lm_parameters(), unsharded(setup))},
        {"KV cache + prefill + logits": generation_transient(shape, setup, sequences, work.prompt_tokens,
                                                             work.new_tokens)},
        {"sequences": sequences, "prompt_tokens": work.prompt_tokens, "new_tokens": work.new_tokens},
    )


def scoring_phase(method: str, shape: ModelShape, setup: TrainingSetup, work: Workload) -> Phase:
    seq_len = work.score_seq_len or work.prompt_tokens + work.new_tokens
    tokens = work.score_batch * seq_len
    return Phase(
        method, "scoring",
        {**baseline(setup), "reward model weights": frozen_weights(shape.classifier_parameters(), unsharded(setup))},
        {"forward activations": forward_transient(shape, setup, tokens)},
        {"sequences": work.score_batch, "seq_len": seq_len, "tokens": tokens},
    )


def sft_training_phase(method: str, shape: ModelShape, setup: TrainingSetup, work: Workload) -> Phase:
    tokens = work.train_batch * work.train_seq_len
    return Phase(
        method, "training",
        {**baseline(setup), **trained_model_states(shape, setup, "policy")},
        {
            "activations + loss head": training_activations(shape, setup, tokens, True) + fused_loss_head(shape, setup, tokens),
            "optimizer step buffer": optimizer_step_buffer(trainable_parameters(shape, setup), setup),
        },
        {"sequences": work.train_batch, "seq_len": work.train_seq_len, "tokens": tokens},
    )


def dpo_training_phase(method: str, shape: ModelShape, setup: TrainingSetup, work: Workload) -> Phase:
    tokens = 2 * work.train_batch * work.train_seq_len  # chosen and rejected in one forward
    resident = {**baseline(setup), **trained_model_states(shape, setup, "policy")}
    if not setup.lora and not work.dpo_precompute_ref:
        # With LoRA the reference is the policy with its adapters off; precomputed log-probs need none.
        resident["reference weights"] = frozen_weights(shape.causal_lm_parameters(), setup)
    return Phase(
        method, "training", resident,
        {
            "activations + loss head": training_activations(shape, setup, tokens, True) + fused_loss_head(shape, setup, tokens),
            "optimizer step buffer": optimizer_step_buffer(trainable_parameters(shape, setup), setup),
        },
        {"pairs": work.train_batch, "seq_len": work.train_seq_len, "tokens": tokens,
         "reference": "adapters disabled" if setup.lora else
         ("precomputed log-probs" if work.dpo_precompute_ref else "frozen copy")},
    )


def ppo_phases(shape: ModelShape, setup: TrainingSetup, work: Workload) -> list[Phase]:
    """Our PPO: trainable policy (LoRA or full), trainable value model (always full, initialised from the
    reward model), frozen reference (a copy unless LoRA), frozen reward model; one optimizer for both."""
    full = TrainingSetup(**{**setup.__dict__, "lora": False})
    resident = {**baseline(setup), **trained_model_states(shape, setup, "policy")}
    if not setup.lora:
        resident["reference weights"] = frozen_weights(shape.causal_lm_parameters(), unsharded(setup))
    resident.update(trained_model_states(shape, full, "value model", classifier=True))
    resident["reward model weights"] = frozen_weights(shape.classifier_parameters(), unsharded(setup))
    seq_len = work.ppo_prompt_tokens + work.ppo_new_tokens
    rollout_tokens = work.ppo_rollout_batch * work.ppo_new_tokens
    engine_weights = (shape.causal_lm_parameters() + shape.classifier_parameters()) * setup.dtype_bytes
    rollout = (
        generation_transient(shape, setup, work.ppo_rollout_batch, work.ppo_prompt_tokens, work.ppo_new_tokens)
        # policy and reference response logits alive together, each with its fp32 log-softmax temporaries
        + 2 * rollout_tokens * shape.vocab_size * setup.dtype_bytes + rollout_tokens * shape.vocab_size * 8
        # ZeRO-3: the other ranks' shares of the policy and value weights, gathered to generate
        + engine_weights - frozen_weights(shape.causal_lm_parameters() + shape.classifier_parameters(), setup)
    )
    micro_tokens = work.ppo_micro_batch * seq_len
    update = (
        training_activations(shape, setup, micro_tokens, True)
        + training_activations(shape, full, micro_tokens, False)  # value model, fully trained
        + full_logits_head(shape, setup, work.ppo_micro_batch * work.ppo_new_tokens)
    )
    trainable = trainable_parameters(shape, setup) + shape.classifier_parameters()
    workload = {"rollout_batch": work.ppo_rollout_batch, "micro_batch": work.ppo_micro_batch,
                "prompt_tokens": work.ppo_prompt_tokens, "new_tokens": work.ppo_new_tokens}
    return [
        Phase("ppo", "rollout", resident, {"KV cache + response logits": rollout}, workload),
        Phase("ppo", "update", resident, {
            "policy + value activations + logits": update,
            "optimizer step buffer": optimizer_step_buffer(trainable, setup),
        }, workload),
    ]


METHODS = ("sft", "rs", "ppo", "dpo", "rsdpo")


def estimate_method(method: str, shape: ModelShape, setup: TrainingSetup, work: Workload) -> list[Phase]:
    """Every phase of ``method`` (sft, rs, ppo, dpo, rsdpo; dpo-bw is estimated as rsdpo)."""
    if method == "sft":
        return [sft_training_phase(method, shape, setup, work)]
    if method == "rs":
        return [generation_phase(method, shape, setup, work), scoring_phase(method, shape, setup, work),
                sft_training_phase(method, shape, setup, work)]
    if method == "dpo":
        return [dpo_training_phase(method, shape, setup, work)]
    if method in ("rsdpo", "dpo-bw"):
        return [generation_phase(method, shape, setup, work), scoring_phase(method, shape, setup, work),
                dpo_training_phase(method, shape, setup, work)]
    if method == "ppo":
        return ppo_phases(shape, setup, work)
    raise ValueError(f"no memory model for method '{method}'; known: {', '.join(METHODS)}, dpo-bw")


def method_peak(phases: list[Phase]) -> float:
    return max(phase.peak_bytes for phase in phases)
