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


# ------------------------------------------------------------------------------------- engine choice

ENGINES = ("auto", "hf", "vllm")


class EngineUnavailable(ValueError):
    """The requested engine cannot run here; the message says why and what to use instead."""


def select_engine(requested: str, device: str) -> tuple[str, str]:
    """(engine name, why): ``auto`` is vllm when it is importable and the run is on CUDA, else hf."""
    import importlib.util

    if requested not in ENGINES:
        raise EngineUnavailable(f"unknown engine '{requested}'; available: {', '.join(ENGINES)}")
    if requested == "hf":
        return "hf", "requested"
    installed = importlib.util.find_spec("vllm") is not None
    if requested == "vllm":
        if not installed:
            raise EngineUnavailable(
                "engine 'vllm' requested but vllm is not installed; on a CUDA machine install the extra "
                "(pip install 'rsdpo-harness[vllm]', in a fresh environment), or use --engine hf"
            )
        if device != "cuda":
            raise EngineUnavailable(f"engine 'vllm' needs CUDA but the run's device is '{device}'; use --engine hf")
        return "vllm", "requested"
    if device != "cuda":
        return "hf", f"auto: the run's device is '{device}', vllm needs CUDA"
    if not installed:
        return "hf", "auto: vllm is not installed"
    try:
        import vllm  # noqa: F401  (an install that does not import, e.g. a torch mismatch, is not usable)
    except Exception as err:  # noqa: BLE001
        return "hf", f"auto: vllm is installed but does not import ({type(err).__name__}: {err})"
    return "vllm", "auto: vllm is importable and CUDA is present"


def load_engine(path: str, model_cfg: ModelConfig, device: str, engine: str = "auto", tensor_parallel_size: int = 1,
                seed: int = 0):
    """The generation engine for a policy folder: HFEngine or VLLMEngine, chosen by ``select_engine``.

    Says which on stderr, and the engine keeps the reason (``engine.selection``) for the stage's stats."""
    import sys

    name, reason = select_engine(engine, device)
    print(f"harness: generation engine '{name}' ({reason}) for {path}", file=sys.stderr)
    if name == "vllm":
        from harness.vllm_engine import VLLMEngine

        loaded = VLLMEngine.load(path, model_cfg, device, tensor_parallel_size=tensor_parallel_size, seed=seed)
    else:
        loaded = HFEngine.load(path, model_cfg, device)
    loaded.selection = reason
    return loaded


def rollout_engine(policy, tokenizer, path: str, model_cfg: ModelConfig, device: str, engine: str = "auto",
                   tensor_parallel_size: int = 1, seed: int = 0, processes: int = 1):
    """The engine PPO samples rollouts with. hf: generate() on the live policy itself. vllm: a second copy
    of ``path`` (the policy's starting weights) in vLLM, which the trainer refreshes with
    ``engine.sync_weights(policy)`` after every update; it takes a smaller share of GPU memory, since the
    policy, reference, value and reward models share the GPU with it. With several training processes
    each samples from its own policy with hf: one vLLM copy per rank is not supported."""
    import sys

    if processes > 1:
        if engine == "vllm":
            raise EngineUnavailable(f"PPO in {processes} processes rolls out with each rank's own policy; "
                                    "the vllm rollout engine needs one process: use --engine auto or hf")
        name, reason = "hf", f"{engine}: PPO runs in {processes} processes, each generates with its own policy"
    else:
        name, reason = select_engine(engine, device)
    print(f"harness: rollout engine '{name}' ({reason})", file=sys.stderr)
    if name == "vllm":
        from harness.vllm_engine import VLLMEngine

        loaded = VLLMEngine.load(path, model_cfg, device, tensor_parallel_size=tensor_parallel_size,
                                 gpu_memory_utilization=0.3, seed=seed)
    else:
        loaded = HFEngine(policy, tokenizer, device)
    loaded.selection = reason
    return loaded


def load_policy_engine(ctx, input_name: str = "policy"):
    """The engine over the policy a stage reads (an evaluation's ``policy``, sampling's ``sft``), as the run's
    core settings (engine, tensor parallel size) ask."""
    from harness.method import POLICY_DIR

    core = ctx.run.core
    return load_engine(str(ctx.input(input_name) / POLICY_DIR), core.model, ctx.device, core.engine,
                       core.tensor_parallel_size, ctx.seed)
