"""``harness profile``: measured peak memory and time of each method's phases, beside the analytic estimate.

Measured mode: the shared prerequisites (data, SFT, reward model) are trained once in ``<out>/base``
with a few steps. Then, per repeat and method, a copy of that folder gets each of the method's phases
(generation, scoring, training) run by ``harness run`` in a fresh subprocess, so no phase inherits
another's memory. Each stage's ``profile.json`` gives wall time and peaks; repeats give median and
spread. The estimate (``profiling.estimator``) is fed the same settings and the longest padded batch each
phase processed (its records, counted before they are deleted, in the trainer's order), and the process
baseline is measured in a fresh interpreter.

Re-estimate mode (``--re-estimate DIR``): the estimate recomputed beside the measurements stored in DIR.
``run_estimates`` gives ``harness run`` each policy stage's estimate for results.json.

Estimate mode (``--estimate``): the estimate alone, from a shipped model config; no GPU, no download.
"""

from __future__ import annotations

import json
import os
import shutil
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.config import RunConfig
from harness.store import atomic_write_text, read_jsonl, write_json
from profiling.batch_lengths import longest_batch, trainer_batches
from profiling.estimator import TrainingSetup, Workload, estimate_method, method_peak
from profiling.model_shapes import ModelShape, model_shape

GIB = 2 ** 30
# The stages each method runs after the shared prerequisites, as (phase, stage).
PHASES = {
    "rs": [("generation", "samples"), ("scoring", "scored_samples"), ("training", "rs")],
    "rsdpo": [("generation", "samples"), ("scoring", "scored_samples"), ("training", "rsdpo")],
    "dpo-bw": [("generation", "samples"), ("scoring", "scored_samples"), ("training", "dpo-bw")],
    "dpo": [("training", "dpo")],
    "ppo": [("rollout + update", "ppo")],
}
BASE_STAGES = "sft,reward_model,prompts,preferences"
BASELINE_IMPORTS = "import harness.cli, torch, transformers, trl, peft, datasets"


class ProfileError(ValueError):
    """Bad arguments, or a subprocess that failed (its stderr tail is in the message)."""


@dataclass
class ProfileOptions:
    methods: list[str]
    profile: str
    steps: int
    repeats: int
    out: Path
    overrides: list[str]


def work_overrides(steps: int, cfg: RunConfig) -> list[str]:
    """The fixed, small amount of work: ``steps`` optimizer steps per trained stage, one generation batch.

    rsdpo.eta / dpo-bw: 0.5 keeps every pair with a positive reward gap, so a reward model trained for a
    few steps still yields pairs; the memory of a DPO step depends on batch and lengths, not on which
    pairs. One PPO epoch per rollout makes ``ppo.steps`` the number of rollouts and optimizer steps alike.
    """
    return [
        "evaluate=[]",
        f"data.prompts.limit={cfg.section('samples').batch_size}",
        *(f"{name}.max_steps={steps}" for name in ("sft", "reward_model", "rs", "dpo", "rsdpo", "dpo-bw")),
        f"ppo.steps={steps}",
        "ppo.num_ppo_epochs=1",
        "rsdpo.eta=0.5",
    ]


def run_harness(args: list[str], cwd: Path, log: Path) -> None:
    """``python -m harness ...`` in a fresh process (it inherits our niceness); its output goes to ``log``."""
    command = [sys.executable, "-m", "harness", *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as out:
        result = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise ProfileError(f"`harness {' '.join(args)}` exited {result.returncode} (log: {log}): {' | '.join(tail)}")


def measure_baseline(cwd: Path) -> int:
    """Peak RSS of a fresh interpreter that imports what every stage process imports, before any model."""
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork and exec, so a child of a large process (a
    # `harness run` 10 GiB in) would report its parent's peak; VmHWM belongs to the new address space.
    code = (f"{BASELINE_IMPORTS}; print(next(line.split()[1] for line in open('/proc/self/status') "
            "if line.startswith('VmHWM:')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ProfileError(f"measuring the process baseline failed: {result.stderr.strip().splitlines()[-1:]}")
    return int(result.stdout.strip().splitlines()[-1]) * 1024  # VmHWM is in kB


def stage_profile(run_dir: Path, stage: str) -> dict:
    """The profile.json of ``stage`` in a run folder, found through its manifest."""
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    record = manifest.get("stages", {}).get(stage)
    if record is None:
        raise ProfileError(f"{manifest_path}: no stage '{stage}' in field 'stages'")
    profile = json.loads((run_dir / record["dir"] / "profile.json").read_text())
    profile["status"] = record.get("status")
    return profile


def peak_of(profile: dict) -> tuple[int, str]:
    """The peak a phase is judged by: CUDA max allocated (largest device) when measured, else peak RSS."""
    devices = profile.get("cuda", {}).get("devices")
    if devices:
        return max(d["max_memory_allocated_bytes"] for d in devices), "cuda max_memory_allocated"
    return profile["peak_rss_bytes"], "peak RSS (process and children)"


# ------------------------------------------------------------------------------------------ estimation


def precision_of(cfg: RunConfig, device: str) -> str:
    dtype = cfg.core.model.dtype
    if dtype == "float32" or (dtype == "auto" and device == "cpu"):
        return "fp32"
    return "bf16"  # the harness loads 16-bit weights and trains them as they are (Trainer bf16=True)


def setup_for(cfg: RunConfig, section: str, precision: str, baseline: int, gpus: int = 1,
              zero_stage: int = 0, device: str = "cuda") -> TrainingSetup:
    method_cfg = cfg.section(section)
    targets = getattr(method_cfg, "lora_target_modules", "all-linear")
    return TrainingSetup(
        precision=precision, lora=bool(getattr(method_cfg, "lora", False)), lora_r=getattr(method_cfg, "lora_r", 16),
        lora_dropout=getattr(method_cfg, "lora_dropout", 0.0),
        lora_targets=targets if targets in ("all-linear", "attention") else "all-linear",
        gradient_checkpointing=bool(getattr(method_cfg, "gradient_checkpointing", False)),
        zero_stage=zero_stage, gpus=gpus, baseline_bytes=baseline, device=device,
    )


@dataclass
class TokenLengths:
    """The longest padded batch (tokens) each phase of one method processes, and where each came from.

    ``prompt``: a generation batch's prompts (with the generation prompt; PPO: its rollout prompts);
    ``sequence``: a scoring batch (prompt + completion); ``training``: a training micro-batch (DPO: one side,
    chosen and rejected share the batch). Each is already truncated as the stage truncates.
    """

    prompt: int
    sequence: int
    training: int
    source: dict[str, str]

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "sequence": self.sequence, "training": self.training, "source": self.source}


def workload_for(method: str, cfg: RunConfig, lengths: TokenLengths, processes: int = 1) -> Workload:
    """Per device: the TRL stages' batch sizes are per device already; PPO's are global, split across
    its ``processes``."""
    samples, scoring = cfg.section("samples"), cfg.section("scored_samples")
    common = dict(
        generation_prompts=samples.batch_size, samples_per_prompt=samples.k, prompt_tokens=lengths.prompt,
        new_tokens=samples.max_new_tokens, score_batch=scoring.batch_size, score_seq_len=lengths.sequence,
    )
    if method == "ppo":
        ppo = cfg.section("ppo")
        micro = max(1, ppo.mini_batch_size // processes // ppo.gradient_accumulation_steps)
        rollouts = max(1, ppo.rollout_batch_size // processes)
        return Workload(**common, ppo_rollout_batch=rollouts, ppo_micro_batch=micro,
                        ppo_prompt_tokens=lengths.prompt, ppo_new_tokens=ppo.max_new_tokens)
    train = cfg.section(method)
    return Workload(**common, train_batch=train.per_device_train_batch_size, train_seq_len=lengths.training,
                    dpo_precompute_ref=bool(getattr(train, "precompute_ref_log_probs", False)))


# Files the stages write (their stable formats), read here to count the tokens each phase processes.
STAGE_RECORDS = {"prompts": "prompts.jsonl", "preferences": "preferences.jsonl", "samples": "samples.jsonl",
                 "rs": "selected.jsonl", "rsdpo": "pairs.jsonl", "dpo-bw": "pairs.jsonl"}


class TokenCounter:
    """Token counts of chat records with the run's tokenizer, as the trainers tokenize them."""

    def __init__(self, cfg: RunConfig):
        from harness.models import load_tokenizer, model_path

        self.tokenizer = load_tokenizer(model_path(cfg.core.model), cfg.core.model)
        self.name = f"tokenizer {Path(str(self.tokenizer.name_or_path)).name}"

    def __call__(self, messages: list[dict], generation_prompt: bool) -> int:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def _reply(value) -> list[dict]:
    return value if isinstance(value, list) else [{"role": "assistant", "content": str(value)}]


def _stage_records(run_dirs: list[Path], stage: str) -> list[dict] | None:  # stage: "rsdpo[rsdpo.eta=0.9]" too
    """A stage's records from the first run folder that still holds them (``harness profile`` deletes a
    method's stages after measuring it), else None."""
    for run_dir in run_dirs:
        manifest = run_dir / "manifest.json"
        record = json.loads(manifest.read_text()).get("stages", {}).get(stage) if manifest.is_file() else None
        path = run_dir / record["dir"] / STAGE_RECORDS[stage.split("[")[0]] if record else None
        if path is not None and path.is_file():
            return read_jsonl(path)
    return None


def training_micro_batches(train, num_records: int) -> int:
    """Micro-batches a TRL trainer draws: max_steps x accumulation, else epochs x batches per epoch."""
    batch = train.per_device_train_batch_size
    if train.max_steps > 0:
        return train.max_steps * train.gradient_accumulation_steps
    return math.ceil(train.num_train_epochs * math.ceil(num_records / batch))


def hf_trainer_order(seed: int):
    """The HF Trainer's order (transformers 5, accelerate 1.x): ``SeedableRandomSampler`` reseeds a torch
    generator with ``data_seed + epoch`` and draws ``torch.randperm`` each epoch (``trl_args`` sets data_seed)."""
    import torch

    return lambda n: (lambda epoch: torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist())


def ppo_rollout_batches(num_prompts: int, size: int, steps: int, seed: int) -> list[list[int]]:
    """methods/ppo_trainer.py ``_prompt_batch``: a numpy permutation per pass over the prompts."""
    import numpy as np

    per_pass = max(1, num_prompts // size)
    out = []
    for step in range(steps):
        order = np.random.default_rng(seed + step // per_pass).permutation(num_prompts)
        start = (step % per_pass) * size
        out.append([int(i) for i in np.resize(order, start + size)[start:start + size]])
    return out


def method_token_lengths(method: str, cfg: RunConfig, run_dirs: list[Path], count: TokenCounter,
                         stage: str | None = None) -> TokenLengths:
    """The longest padded batch of each of ``method``'s phases, from the records of the stages in
    ``run_dirs`` (the first folder holding a stage's records wins),
    in the order and batches its trainer or engine takes them (``profiling.batch_lengths``). Where a
    stage's records are gone, an upper bound: the longest prompt + max_new_tokens, said in ``source``."""
    cap, seed = cfg.core.model.max_length, cfg.core.seed
    samples_cfg, scoring_cfg = cfg.section("samples"), cfg.section("scored_samples")
    source: dict[str, str] = {}
    prompts = _stage_records(run_dirs, "prompts") or []
    prompt_lens = [min(cap, count(p["prompt"], True)) for p in prompts]

    if method == "ppo":
        ppo = cfg.section("ppo")
        rollouts = ppo_rollout_batches(len(prompts), ppo.rollout_batch_size, ppo.steps, seed)
        longest = longest_batch(prompt_lens, rollouts)
        source["prompt"] = f"prompts of the {len(rollouts)} rollout batches in PPO's order ({count.name})"
        return TokenLengths(longest, longest + ppo.max_new_tokens, longest + ppo.max_new_tokens, source)

    generation = trainer_batches(len(prompts), samples_cfg.batch_size, math.ceil(len(prompts) / samples_cfg.batch_size))
    prompt = longest_batch(prompt_lens, generation)
    source["prompt"] = f"prompts in generation batches of {samples_cfg.batch_size} ({count.name})"
    bound = min(cap, max(prompt_lens, default=0) + samples_cfg.max_new_tokens)
    bound_source = (f"upper bound: longest prompt + samples.max_new_tokens ({max(prompt_lens, default=0)} + "
                    f"{samples_cfg.max_new_tokens}); the stage's records are not stored")
    samples = _stage_records(run_dirs, "samples")
    if samples is not None:
        lens = [min(cap, count(s["prompt"] + _reply(s["text"]), False)) for s in samples]
        batches = trainer_batches(len(lens), scoring_cfg.batch_size, math.ceil(len(lens) / scoring_cfg.batch_size))
        sequence = longest_batch(lens, batches)
        source["sequence"] = f"samples in scoring batches of {scoring_cfg.batch_size} ({count.name})"
    else:
        sequence, source["sequence"] = bound, bound_source

    train = cfg.section(method)
    max_length = min(cap, train.max_length)
    if method == "dpo":
        records = _stage_records(run_dirs, "preferences")
    else:
        records = _stage_records(run_dirs, stage or method)
    if records is None:
        return TokenLengths(prompt, sequence, min(max_length, bound), {**source, "training": bound_source})
    if method == "rs":
        lens = [min(max_length, count(r["prompt"] + _reply(r["text"]), False)) for r in records]
    else:
        # TRL DPO drops pairs whose prompt alone fills max_length, then truncates each side to max_length
        records = [r for r in records if count(r["prompt"], True) < max_length]
        lens = [max(min(max_length, count(r["prompt"] + _reply(r[side]), False)) for side in ("chosen", "rejected"))
                for r in records]
    batches = trainer_batches(len(lens), train.per_device_train_batch_size, training_micro_batches(train, len(lens)),
                              hf_trainer_order(seed)(len(lens)))
    source["training"] = (f"{len(batches)} micro-batches of {train.per_device_train_batch_size} of the stage's "
                          f"{len(lens)} records in the HF Trainer's order (seed {seed}), truncated at {max_length} "
                          f"({count.name})")
    return TokenLengths(prompt, sequence, longest_batch(lens, batches), source)


def shape_for(cfg: RunConfig) -> ModelShape:
    """The model's shape from its config.json when it is a local folder, else the shipped table."""
    from harness.models import model_path

    source = cfg.core.model.source
    if source == "tiny-random-llama":
        config = json.loads((Path(model_path(cfg.core.model)) / "config.json").read_text())
        return ModelShape.from_hf_config(source, config, "tiny-random-llama config.json")
    try:
        return model_shape(source)
    except ValueError:
        folder = Path(model_path(cfg.core.model))
        if (folder / "config.json").exists():
            return ModelShape.from_hf_config(source, json.loads((folder / "config.json").read_text()),
                                             str(folder / "config.json"))
        raise


def estimates(methods: list[str], cfg: RunConfig, shape: ModelShape, lengths: dict[str, TokenLengths],
              precision: str, baseline: int, gpus: int = 1, zero_stage: int = 0,
              device: str = "cuda") -> dict[str, list]:
    """Phases per method; the generation and scoring phases use the samples' settings, not the method's."""
    out = {}
    for method in methods:
        setup = setup_for(cfg, method, precision, baseline, gpus, zero_stage, device)
        out[method] = estimate_method(method, shape, setup, workload_for(method, cfg, lengths[method], gpus))
    return out


# ---------------------------------------------------------------------------------------- measurement


def run_measured(options: ProfileOptions, cwd: Path) -> dict:
    from harness.runner import resolve_run_config

    unknown = [m for m in options.methods if m not in PHASES]
    if unknown:
        raise ProfileError(f"cannot profile {', '.join(unknown)}; profiled methods: {', '.join(PHASES)}")
    if options.steps < 1 or options.repeats < 1:
        raise ProfileError(f"--steps and --repeats must be at least 1; found {options.steps}, {options.repeats}")
    plain = resolve_run_config(["ppo", "rsdpo", "rs", "dpo"], options.profile, options.overrides)
    overrides = work_overrides(options.steps, plain) + list(options.overrides)
    cfg = resolve_run_config(["ppo", "rsdpo", "rs", "dpo"], options.profile, overrides)
    sets = [arg for item in overrides for arg in ("--set", item)]
    out = options.out
    base = out / "base"
    started = time.perf_counter()
    print(f"profile: base run (data, sft, reward_model; {options.steps} steps) in {base}", file=sys.stderr)
    run_harness(["run", "--profile", options.profile, "--methods", BASE_STAGES, "--run-dir", str(base), *sets],
                cwd, out / "logs" / "base.log")
    rows: list[dict] = []
    lengths: dict[str, TokenLengths] = {}
    counter: TokenCounter | None = None
    for repeat in range(options.repeats):
        for method in options.methods:
            run_dir = out / f"repeat-{repeat}" / method
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.copytree(base / "stages", run_dir / "stages")
            for phase, stage in PHASES[method]:
                print(f"profile: repeat {repeat + 1}/{options.repeats}, {method}: {phase} ({stage})", file=sys.stderr)
                run_harness(["run", "--profile", options.profile, "--methods", stage, "--run-dir", str(run_dir),
                             *sets], cwd, out / "logs" / f"repeat-{repeat}-{method}-{stage}.log")
                profile = stage_profile(run_dir, stage)
                if profile["status"] == "reused":
                    raise ProfileError(f"{run_dir}: stage '{stage}' was reused, not measured")
                peak, measured_as = peak_of(profile)
                rows.append({"method": method, "phase": phase, "stage": stage, "repeat": repeat,
                             "peak_bytes": peak, "measured_as": measured_as, "wall_s": profile["wall_s"],
                             "peak_rss_bytes": profile["peak_rss_bytes"], "cuda": profile["cuda"],
                             "throughput": profile.get("throughput", {})})
            if method not in lengths:  # the records each phase processed, counted before they are deleted
                counter = counter or TokenCounter(cfg)
                lengths[method] = method_token_lengths(method, cfg, [run_dir, base], counter)
            shutil.rmtree(run_dir / "stages", ignore_errors=True)  # policies are large; the numbers are kept
    device = json.loads((base / "manifest.json").read_text())["device"]
    baseline = measure_baseline(cwd) if device == "cpu" else 0
    shape = shape_for(cfg)
    estimated = estimates(options.methods, cfg, shape, lengths, precision_of(cfg, device), baseline,
                          device="cpu" if device == "cpu" else "cuda")
    return summarize(options, rows, estimated, {
        "profile": options.profile, "device": device, "steps": options.steps, "repeats": options.repeats,
        "overrides": overrides, "model": cfg.core.model.source, "model_shape": shape.__dict__,
        "precision": precision_of(cfg, device), "baseline_bytes": baseline,
        "baseline_measured_as": f"peak RSS of `python -c '{BASELINE_IMPORTS}'`" if baseline else "not used on GPU",
        "token_lengths": {m: lengths[m].to_dict() for m in options.methods},
        "wall_s": round(time.perf_counter() - started, 1),
        "versions": _versions(),
    })


def re_estimate(out: Path) -> dict:
    """The estimate recomputed beside the measurements stored in ``out/profile.json`` (nothing is measured
    again): the same config, device and measured process baseline; token lengths from the stored counts
    when the summary has them, else recounted from the records still in ``out`` (base/ and repeat-0/)."""
    from harness.runner import resolve_run_config

    path = out / "profile.json"
    if not path.is_file():
        raise ProfileError(f"{path}: not found; run `harness profile --out {out}` first")
    summary = json.loads(path.read_text())
    produced = summary.get("produced_by") or {}
    missing = [k for k in ("profile", "overrides", "device", "baseline_bytes") if k not in produced]
    if missing or not summary.get("measurements"):
        raise ProfileError(f"{path}: field 'produced_by' lacks {', '.join(missing) or 'nothing'}; "
                           f"'measurements' has {len(summary.get('measurements') or [])} rows")
    methods = [m["method"] for m in summary["methods"]]
    cfg = resolve_run_config(["ppo", "rsdpo", "rs", "dpo"], produced["profile"], produced["overrides"])
    device = produced["device"]
    stored = produced.get("token_lengths") or {}
    lengths, counter = {}, None
    for method in methods:
        if isinstance(stored.get(method), dict) and "training" in stored[method]:
            lengths[method] = TokenLengths(**stored[method])
        else:
            counter = counter or TokenCounter(cfg)
            lengths[method] = method_token_lengths(method, cfg, [out / "repeat-0" / method, out / "base"], counter)
    shape = shape_for(cfg)
    precision = precision_of(cfg, device)
    estimated = estimates(methods, cfg, shape, lengths, precision, produced["baseline_bytes"],
                          device="cpu" if device == "cpu" else "cuda")
    options = ProfileOptions(methods, produced["profile"], produced.get("steps", 0), produced.get("repeats", 0),
                             out, [])
    previous = {m["method"]: m.get("error_percent") for m in summary["methods"]}
    produced = {**produced, "token_lengths": {m: lengths[m].to_dict() for m in methods},
                "model_shape": shape.__dict__, "precision": precision,
                "re_estimated": f"`harness profile --re-estimate`, rsdpo-harness {_versions().get('rsdpo-harness')}; "
                                f"error before: {', '.join(f'{m} {e:+.1f}%' for m, e in previous.items() if e is not None)}"}
    return summarize(options, summary["measurements"], estimated, produced)


def run_estimates(run_dir: Path, cfg: RunConfig, stage_names: list[str], device: str) -> dict[str, dict]:
    """The analytic estimate of each policy stage of a finished run, for its ``profile["estimated"]`` in
    results.json: the phases of the stage itself (training; PPO: rollout and update), with the token lengths
    its records give. Cheap (tokenizer only, no model); a stage it cannot estimate gets ``skipped`` and why."""
    out: dict[str, dict] = {}
    todo = [name for name in stage_names if name.split("[")[0] in PHASES]
    if not todo:
        return out
    try:
        shape = shape_for(cfg)
        counter = TokenCounter(cfg)
        baseline = cached_baseline() if device == "cpu" else 0
    except Exception as err:  # an estimate never fails a run: say why there is none
        return {name: {"skipped": f"{type(err).__name__}: {err}"} for name in todo}
    precision = precision_of(cfg, device)
    for name in todo:
        method = name.split("[")[0]
        try:
            lengths = method_token_lengths(method, cfg, [run_dir], counter, stage=name)
            phases = estimates([method], cfg, shape, {method: lengths}, precision, baseline,
                               device="cpu" if device == "cpu" else "cuda")[method]
            own = phases if method == "ppo" else [p for p in phases if p.name == "training"]
            out[name] = {
                "peak_bytes": round(method_peak(own)), "method_peak_bytes": round(method_peak(phases)),
                "phases": [p.to_dict() for p in phases], "token_lengths": lengths.to_dict(),
                "produced_by": f"profiling.estimator ({shape.name}, {precision}, baseline "
                               f"{baseline / GIB:.2f} GiB: {'measured peak RSS of ' + BASELINE_IMPORTS if baseline else 'none on GPU'})",
            }
        except Exception as err:
            out[name] = {"skipped": f"{type(err).__name__}: {err}"}
    return out


def cached_baseline() -> int:
    """``measure_baseline`` once per environment (python and package versions), cached beside the models."""
    from harness.models import cache_root

    key = json.dumps({"python": sys.executable, **_versions()}, sort_keys=True)
    path = cache_root() / "process-baseline.json"
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return int(cached["bytes"])
    except (OSError, ValueError, KeyError):
        pass
    value = measure_baseline(Path.cwd())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"key": key, "bytes": value, "measured_as": f"peak RSS of `python -c '{BASELINE_IMPORTS}'`"})
    return value


def _versions() -> dict:
    from harness.provenance import environment

    return environment().get("versions", {})


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarize(options: ProfileOptions, rows: list[dict], estimated: dict, produced_by: dict) -> dict:
    """Median and spread per (method, phase) and per method; estimate and error beside each."""
    phases, methods = [], []
    for method in options.methods:
        estimate_by_phase = {p.name: p for p in estimated[method]}
        per_repeat_peak: dict[int, float] = {}
        for phase, stage in PHASES[method]:
            mine = [r for r in rows if r["method"] == method and r["phase"] == phase]
            peak = _spread([r["peak_bytes"] for r in mine])
            est = _phase_estimate(method, phase, estimate_by_phase)
            phases.append({"method": method, "phase": phase, "stage": stage, "peak_bytes": peak,
                           "wall_s": _spread([r["wall_s"] for r in mine]), "estimated_bytes": est,
                           "error_percent": _error(est, peak["median"]),
                           "throughput": mine[-1]["throughput"] if mine else {}})
            for r in mine:
                per_repeat_peak[r["repeat"]] = max(per_repeat_peak.get(r["repeat"], 0), r["peak_bytes"])
        peak = _spread(list(per_repeat_peak.values()))
        est = method_peak(estimated[method])
        methods.append({"method": method, "peak_bytes": peak, "estimated_bytes": round(est),
                        "error_percent": _error(est, peak["median"])})
    by_method = {m["method"]: m for m in methods}
    ratio = None
    if "ppo" in by_method and "rsdpo" in by_method:
        ratio = {
            "measured": round(by_method["ppo"]["peak_bytes"]["median"] / by_method["rsdpo"]["peak_bytes"]["median"], 3),
            "estimated": round(by_method["ppo"]["estimated_bytes"] / by_method["rsdpo"]["estimated_bytes"], 3),
        }
    return {"produced_by": produced_by, "methods": methods, "phases": phases, "ppo_over_rsdpo_peak": ratio,
            "estimate_breakdown": {m: [p.to_dict() for p in estimated[m]] for m in options.methods},
            "measurements": rows}


def _phase_estimate(method: str, phase: str, by_phase: dict) -> int:
    if method == "ppo":  # one stage holds both: its peak is the larger of the two estimated phases
        return round(max(p.peak_bytes for p in by_phase.values()))
    return round(by_phase[phase].peak_bytes)


def _error(estimate: float, measured: float) -> float | None:
    return round(100 * (estimate - measured) / measured, 1) if measured else None


# ---------------------------------------------------------------------------------------------- output


def _gib(value: float) -> str:
    return f"{value / GIB:.2f}"


def write_outputs(summary: dict, out: Path) -> dict[str, Path]:
    """profile.json, profile.csv, profile.md and profile.png (measured median with min-max, and estimate)."""
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame([{
        "method": p["method"], "phase": p["phase"], "stage": p["stage"],
        "measured_peak_gib_median": round(p["peak_bytes"]["median"] / GIB, 3),
        "measured_peak_gib_min": round(p["peak_bytes"]["min"] / GIB, 3),
        "measured_peak_gib_max": round(p["peak_bytes"]["max"] / GIB, 3),
        "estimated_peak_gib": round(p["estimated_bytes"] / GIB, 3), "error_percent": p["error_percent"],
        "wall_s_median": p["wall_s"]["median"], "repeats": p["peak_bytes"]["n"],
    } for p in summary["phases"]] + [{
        "method": m["method"], "phase": "peak (max over phases)", "stage": "",
        "measured_peak_gib_median": round(m["peak_bytes"]["median"] / GIB, 3),
        "measured_peak_gib_min": round(m["peak_bytes"]["min"] / GIB, 3),
        "measured_peak_gib_max": round(m["peak_bytes"]["max"] / GIB, 3),
        "estimated_peak_gib": round(m["estimated_bytes"] / GIB, 3), "error_percent": m["error_percent"],
        "wall_s_median": None, "repeats": m["peak_bytes"]["n"],
    } for m in summary["methods"]])
    paths = {"json": out / "profile.json", "csv": out / "profile.csv", "md": out / "profile.md",
             "png": out / "profile.png"}
    write_json(paths["json"], summary)
    atomic_write_text(paths["csv"], table.to_csv(index=False))
    atomic_write_text(paths["md"], markdown_report(summary, table))
    _bar_chart(summary, paths["png"])
    return paths


def markdown_report(summary: dict, table) -> str:
    produced = summary["produced_by"]
    lines = [
        f"# Peak memory per method and phase: profile `{produced['profile']}`",
        "",
        f"Measured by `harness profile` on {produced['device']} ({_measured_as(summary)}), "
        f"model `{produced['model']}` ({produced['precision']}), {produced['steps']} training steps per stage, "
        f"{produced['repeats']} repeat(s), each phase in a fresh process; median [min, max]. "
        f"Estimate: `profiling.estimator`, process baseline {_gib(produced['baseline_bytes'])} GiB "
        f"({produced['baseline_measured_as']}), token lengths: the longest padded batch each phase processed "
        f"(below). Versions: {', '.join(f'{k} {v}' for k, v in sorted(produced['versions'].items()))}."
        + (f" Estimates recomputed from the stored measurements ({produced['re_estimated']})."
           if produced.get("re_estimated") else ""),
        "",
        "| method | phase | measured peak GiB | estimated GiB | error | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        spread = f"{row.measured_peak_gib_median:.2f} [{row.measured_peak_gib_min:.2f}, {row.measured_peak_gib_max:.2f}]"
        wall = "" if row.wall_s_median is None or row.wall_s_median != row.wall_s_median else f"{row.wall_s_median:.1f}"
        lines.append(f"| {row.method} | {row.phase} | {spread} | {row.estimated_peak_gib:.2f} | "
                     f"{row.error_percent:+.1f}% | {wall} |")
    ratio = summary.get("ppo_over_rsdpo_peak")
    if ratio:
        lines += ["", f"PPO / RS-DPO peak: measured {ratio['measured']:.2f}x, estimated {ratio['estimated']:.2f}x "
                  "(same invocation)."]
    lines += ["", "Token lengths fed to the estimate (longest padded batch, tokens):", ""]
    for method, lengths in produced["token_lengths"].items():
        used = ("prompt",) if method == "ppo" else ("training",) if method == "dpo" else (
            "prompt", "sequence", "training")
        names = {"prompt": "generation prompts", "sequence": "scoring", "training": "training"}
        if method == "ppo":
            names["prompt"] = "rollout prompts"
        lines.append(f"- {method}: " + "; ".join(
            f"{names[k]} {lengths[k]} ({lengths['source'].get(k, 'assumed')})" for k in used))
    lines += ["", f"Work per stage (`--set`): {', '.join(f'`{o}`' for o in produced['overrides'])}.", ""]
    return "\n".join(lines)


def _measured_as(summary: dict) -> str:
    kinds = {r["measured_as"] for r in summary["measurements"]}
    return ", ".join(sorted(kinds))


def _bar_chart(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    phases = summary["phases"]
    labels = [f"{p['method']}\n{p['phase']}" for p in phases]
    medians = np.array([p["peak_bytes"]["median"] for p in phases]) / GIB
    low = medians - np.array([p["peak_bytes"]["min"] for p in phases]) / GIB
    high = np.array([p["peak_bytes"]["max"] for p in phases]) / GIB - medians
    est = np.array([p["estimated_bytes"] for p in phases]) / GIB
    x = np.arange(len(phases))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(phases)), 4.2))
    ax.bar(x - 0.2, medians, 0.4, yerr=[low, high], capsize=3, label="measured (median, min-max)")
    ax.bar(x + 0.2, est, 0.4, label="estimated (profiling.estimator)")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("peak memory (GiB)")
    produced = summary["produced_by"]
    ax.set_title(f"profile {produced['profile']}: {produced['model']}, {produced['device']}, "
                 f"{produced['steps']} steps, {produced['repeats']} repeat(s)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- estimate


def assumed_lengths(method: str, cfg: RunConfig, prompt_tokens: int) -> TokenLengths:
    """Without data: every prompt ``prompt_tokens`` long, samples at max_new_tokens, DPO pairs at max_length."""
    cap, new = cfg.core.model.max_length, cfg.section("samples").max_new_tokens
    sampled = min(cap, prompt_tokens + new)
    if method == "ppo":
        return TokenLengths(prompt_tokens, sampled, sampled, {"prompt": "--prompt-tokens"})
    train = min(cap, cfg.section(method).max_length)
    training = train if method == "dpo" else min(train, sampled)
    return TokenLengths(prompt_tokens, sampled, training, {
        "prompt": "--prompt-tokens", "training": "max_length" if method == "dpo" else "prompt + max_new_tokens"})


def estimate_table(methods: list[str], profile: str, model: str, overrides: list[str], precision: str | None,
                   gpus: int, zero_stage: int, prompt_tokens: int) -> dict:
    """The estimate alone, for a shipped model config and a profile's settings: no GPU, no download."""
    from harness.runner import resolve_run_config

    unknown = [m for m in methods if m not in PHASES]
    if unknown:
        raise ProfileError(f"cannot estimate {', '.join(unknown)}; estimated methods: {', '.join(PHASES)}")
    cfg = resolve_run_config(["ppo", "rsdpo", "rs", "dpo"], profile, overrides)
    shape = model_shape(model)
    if precision is None:
        precision = "fp32" if cfg.core.model.dtype == "float32" else "bf16-mixed"
    lengths = {m: assumed_lengths(m, cfg, prompt_tokens) for m in methods}
    phases = estimates(methods, cfg, shape, lengths, precision, 0, gpus, zero_stage)
    peaks = {m: method_peak(p) for m, p in phases.items()}
    ratio = round(peaks["ppo"] / peaks["rsdpo"], 3) if "ppo" in peaks and "rsdpo" in peaks else None
    return {
        "produced_by": {"estimator": "profiling.estimator", "model": model, "model_shape": shape.__dict__,
                        "parameters": shape.causal_lm_parameters(), "profile": profile, "overrides": overrides,
                        "precision": precision, "gpus": gpus, "zero_stage": zero_stage,
                        "token_lengths": {m: v.to_dict() for m, v in lengths.items()}},
        "phases": {m: [p.to_dict() for p in ps] for m, ps in phases.items()},
        "peaks_bytes": {m: round(v) for m, v in peaks.items()},
        "ppo_over_rsdpo_peak": ratio,
    }


def print_estimate(result: dict) -> None:
    produced = result["produced_by"]
    print(f"Estimated peak memory per device: {produced['model']} ({produced['parameters'] / 1e9:.2f} B parameters, "
          f"{produced['model_shape']['source']}), {produced['precision']}, profile {produced['profile']} settings, "
          f"{produced['gpus']} GPU(s), ZeRO stage {produced['zero_stage']}; "
          f"prompts of {next(iter(produced['token_lengths'].values()))['prompt']} tokens, training batches padded "
          "to each method's max_length (DPO) or prompt + max_new_tokens. "
          "Source: profiling.estimator (formulas in its docstring).")
    print()
    print(f"{'method':<8} {'phase':<12} {'peak GiB':>9}  largest terms")
    for method, phases in result["phases"].items():
        for phase in phases:
            terms = {**phase["resident"], **phase["transient"]}
            top = sorted(terms.items(), key=lambda kv: -kv[1])[:3]
            described = ", ".join(f"{name} {_gib(value)}" for name, value in top)
            print(f"{method:<8} {phase['phase']:<12} {_gib(phase['peak_bytes']):>9}  {described}")
        print(f"{method:<8} {'PEAK':<12} {_gib(result['peaks_bytes'][method]):>9}")
    if result["ppo_over_rsdpo_peak"]:
        print(f"\nPPO / RS-DPO peak: {result['ppo_over_rsdpo_peak']:.2f}x")
