"""The ``vllm`` generation engine (GPU only; the optional extra ``rsdpo-harness[vllm]``).

Same interface as ``harness.engines.HFEngine``: ``generate``, ``generate_batches`` (resumable by batch) and
``generate_ids`` (padded token tensors, for PPO), plus ``sync_weights`` to push a trained policy's weights
into the running engine after each PPO update. vLLM is imported only when an engine is built, so this
module imports on machines without it.

Prompts are tokenized here with the same tokenizer and chat template as the HF engine and handed to vLLM
as token ids, so both engines see exactly the same prompts. Every request carries its own seed, derived
from (run seed, prompt index), so a sampling stage gives the same samples whether it runs straight or
resumes, and however many prompts go to vLLM at once. The two engines draw different samples for the
same seed: the engine's name is recorded with the results.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from tqdm.auto import tqdm

from harness.config import ModelConfig
from harness.engines import Completion, SamplingConfig
from harness.models import load_tokenizer, torch_dtype

WORKER_EXTENSION = "harness.vllm_engine.WeightSyncExtension"
SYNC_BUCKET_BYTES = 512 * 2**20  # weights per RPC while syncing: bounds the extra host memory of a sync


class WeightSyncExtension:
    """Mixed into every vLLM worker (``LLM(worker_extension_cls=...)``), so the trainer's process can hand
    it weights by name with ``llm.collective_rpc``; each tensor-parallel worker keeps its own shard."""

    def harness_load_weights(self, weights: list[tuple[str, Any]]) -> int:
        self.model_runner.model.load_weights(weights=weights)  # vLLM's loader maps HF names, shards TP
        return len(weights)


def request_seed(seed: int, prompt_index: int) -> int:
    """One seed per prompt: samples do not depend on how prompts are batched (kept below 2**63)."""
    return (seed * 1_000_003 + prompt_index) % (2**63 - 1)


class VLLMEngine:
    """vLLM's offline ``LLM`` over chat prompts, ``SamplingParams(n=k)`` per prompt."""

    name = "vllm"

    def __init__(self, llm, tokenizer, device: str = "cuda", seed: int = 0, prompts_per_call: int = 512,
                 generation_defaults: dict | None = None):
        self.llm, self.tokenizer, self.device, self.seed = llm, tokenizer, device, seed
        self.tokenizer.padding_side = "left"  # generate_ids pads like the HF engine
        self.prompts_per_call = prompts_per_call
        # Defaults that HF generate() would take from the model's generation config (top_k 50...), so the
        # two engines sample from the same distribution; vLLM's own defaults switch them off.
        self.generation_defaults = generation_defaults or {}
        self._rollout_calls = 0

    @classmethod
    def load(cls, model_path: str, model_cfg: ModelConfig, device: str, tensor_parallel_size: int = 1,
             gpu_memory_utilization: float = 0.85, seed: int = 0) -> VLLMEngine:
        if device != "cuda":
            raise RuntimeError(f"the vllm engine needs CUDA; the run's device is '{device}' (use --engine hf)")
        from vllm import LLM

        dtype = str(torch_dtype(model_cfg.dtype, device)).removeprefix("torch.")
        llm = LLM(
            model=model_path,
            tokenizer=model_path,
            revision=model_cfg.revision,
            trust_remote_code=model_cfg.trust_remote_code,
            dtype=dtype,  # vLLM's own "auto" turns float32 checkpoints into float16; ours picks bf16
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
            worker_extension_cls=WORKER_EXTENSION,
        )
        return cls(llm, load_tokenizer(model_path, model_cfg), device, seed,
                   generation_defaults=_hf_generation_defaults(model_path))

    def close(self) -> None:
        """Stop vLLM's engine process, so its GPU memory is free for the next model (e.g. the reward model)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None

    def __del__(self):
        try:
            if self.llm is not None:
                self.close()
        except Exception:  # noqa: BLE001  (interpreter shutdown: nothing left to free)
            pass

    # ------------------------------------------------------------------------------------- sampling

    def sampling_params(self, n: int, sampling: SamplingConfig, seed: int | None):
        from vllm import SamplingParams

        greedy = sampling.temperature <= 0
        return SamplingParams(
            n=n,
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=seed,
            stop_token_ids=[self.tokenizer.eos_token_id],  # the HF engine stops at the tokenizer's EOS too
            **({} if greedy else self.generation_defaults),
        )

    def prompt_ids(self, conversations: Sequence[list[dict]]) -> list[list[int]]:
        """Token ids of each chat prompt, exactly as the HF engine tokenizes them."""
        texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in conversations]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _generate(self, prompt_ids: list[list[int]], n: int, sampling: SamplingConfig, seeds: list[int | None]):
        params = [self.sampling_params(n, sampling, s) for s in seeds]
        prompts = [{"prompt_token_ids": ids} for ids in prompt_ids]  # vLLM's TokensPrompt
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [sorted(output.outputs, key=lambda o: o.index) for output in outputs]

    def generate_batches(
        self, conversations: list[list[dict]], n: int, sampling: SamplingConfig, seed: int, start_batch: int = 0
    ) -> Iterator[tuple[int, list[list[Completion]]]]:
        """Yield (batch number, n completions per conversation), from ``start_batch`` on, like the HF engine.

        ``sampling.batch_size`` only numbers the batches (the unit a killed stage resumes by); vLLM gets
        ``prompts_per_call`` prompts at once and schedules them itself."""
        size = sampling.batch_size
        total = (len(conversations) + size - 1) // size
        per_call = max(1, self.prompts_per_call // size)
        for first in range(start_batch, total, per_call):
            numbers = range(first, min(first + per_call, total))
            lo, hi = numbers[0] * size, min((numbers[-1] + 1) * size, len(conversations))
            outputs = self._generate(self.prompt_ids(conversations[lo:hi]), n, sampling,
                                     [request_seed(seed, i) for i in range(lo, hi)])
            groups = [[_completion(o) for o in completions] for completions in outputs]
            for number in numbers:
                yield number, groups[number * size - lo:(number + 1) * size - lo]

    def generate(self, conversations: list[list[dict]], n: int, sampling: SamplingConfig, seed: int,
                 desc: str = "generate") -> list[list[Completion]]:
        batches = self.generate_batches(conversations, n, sampling, seed)
        total = (len(conversations) + sampling.batch_size - 1) // sampling.batch_size
        return [group for _, groups in tqdm(batches, total=total, desc=desc, unit="batch") for group in groups]

    def generate_ids(self, conversations: list[list[dict]], n: int, sampling: SamplingConfig):
        """(left-padded prompt inputs, prompt + completion ids padded with pad_token_id): the HF engine's
        tensors, so PPO reads rollouts the same way from either engine."""
        import torch

        texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in conversations]
        inputs = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        ids = [row[mask.bool()].tolist() for row, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
        # Rollouts differ call after call, and the sequence of calls is reproducible from the run's seed.
        self._rollout_calls += 1
        seeds = [request_seed(self.seed, (self._rollout_calls << 32) + i) for i in range(len(ids))]
        outputs = self._generate(ids, n, sampling, seeds)
        responses = [list(o.token_ids) for completions in outputs for o in completions]
        width = max(1, max(len(r) for r in responses))
        pad = self.tokenizer.pad_token_id
        padded = torch.tensor([r + [pad] * (width - len(r)) for r in responses], dtype=inputs["input_ids"].dtype)
        query = inputs["input_ids"].repeat_interleave(n, dim=0)  # as generate(num_return_sequences=n)
        return inputs.to(self.device), torch.cat([query, padded], dim=1).to(self.device)

    # ---------------------------------------------------------------------------------- weight sync

    def sync_weights(self, model) -> int:
        """Copy a (possibly LoRA-wrapped) policy's weights into vLLM; returns how many tensors went.

        LoRA adapters are merged for the copy and unmerged afterwards, and peft's names are mapped back
        to the base model's, as TRL does for its colocated vLLM."""
        peft = hasattr(model, "merge_adapter") and hasattr(model, "peft_config")
        if peft:
            model.merge_adapter()
        sent = 0
        try:
            bucket, size = [], 0
            for name, param in named_weights_for_vllm(model, peft):
                tensor = param.detach().to("cpu", copy=True)  # vLLM's RPC serializes host tensors
                bucket.append((name, tensor))
                size += tensor.numel() * tensor.element_size()
                if size >= SYNC_BUCKET_BYTES:
                    sent += self._send(bucket)
                    bucket, size = [], 0
            if bucket:
                sent += self._send(bucket)
        finally:
            if peft:
                model.unmerge_adapter()
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights
        return sent

    def _send(self, bucket: list) -> int:
        return self.llm.collective_rpc("harness_load_weights", args=(bucket,))[0]


def named_weights_for_vllm(model, peft: bool) -> Iterator[tuple[str, Any]]:
    """(name, tensor) under the base model's names; LoRA factors skipped (they are merged already)."""
    for name, param in model.named_parameters():
        if peft:
            if "lora_" in name or "original_module" in name:
                continue
            name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            name = name.replace("modules_to_save.default.", "")
        yield name, param


def _completion(output) -> Completion:
    reason = "length" if output.finish_reason == "length" else "stop"
    return Completion(output.text, len(output.token_ids), reason)


def _hf_generation_defaults(model_path: str) -> dict:
    """top_k and repetition_penalty as HF generate() applies them when sampling from this model: the
    model's generation_config.json, else transformers' global defaults (top_k 50)."""
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(model_path)
    except OSError:  # no generation_config.json
        config = GenerationConfig()
    fallback = GenerationConfig._get_default_generation_params()
    top_k = config.top_k if config.top_k is not None else fallback["top_k"]
    penalty = config.repetition_penalty if config.repetition_penalty is not None else fallback["repetition_penalty"]
    defaults: dict[str, Any] = {}
    if top_k:
        defaults["top_k"] = int(top_k)
    if penalty != 1.0:
        defaults["repetition_penalty"] = float(penalty)
    return defaults
