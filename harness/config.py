"""Typed run configuration: core sections here, one section per registered stage plugin.

A run's config is built from the dataclass defaults, then a profile (YAML shipped in
``harness/profiles/``), then ``--set key=value`` overrides. Every value is type checked against its
dataclass field; an unknown key is an error naming the key and the closest valid one.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, Literal

import yaml

PROFILES_PACKAGE = "harness.profiles"
DEFAULT_PROFILE = "quick"


class ConfigError(ValueError):
    """A bad config key or value; the message names the key (and the file when there is one)."""


@dataclass
class SourceConfig:
    """Where one kind of record comes from (see ``harness.data.load_records``)."""

    path: str = field(
        default="seed",
        metadata={"help": "'seed' (the dataset shipped with the package), a local file, or a hub dataset id"},
    )
    format: Literal["auto", "internal", "hh-rlhf", "webgpt", "oasst"] = field(
        default="auto", metadata={"help": "reader to use; 'auto' detects it from the first record"}
    )
    split: str = field(default="train", metadata={"help": "split to load when path is a hub id"})
    subset: str | None = field(default=None, metadata={"help": "hub dataset config or data_dir"})
    limit: int | None = field(default=None, metadata={"help": "keep only the first N records (None: all)"})


@dataclass
class DataConfig:
    """What a run reads: demonstrations (SFT), preference pairs (reward model, DPO), the prompts the SFT
    policy is sampled on (RS, RS-DPO), and held-out prompts for evaluation."""

    demonstrations: SourceConfig = field(default_factory=SourceConfig)
    preferences: SourceConfig = field(default_factory=SourceConfig)
    prompts: SourceConfig = field(default_factory=lambda: SourceConfig(path="seed:preferences"))
    heldout_prompts: SourceConfig = field(default_factory=SourceConfig)
    # Harmlessness (read only when a harmless_* stage runs): Anthropic HH-RLHF harmless-base, pairs from its
    # train split for the harmless reward model, prompts from its test split for the evaluations.
    harmless_preferences: SourceConfig = field(
        default_factory=lambda: SourceConfig(path="Anthropic/hh-rlhf", subset="harmless-base", split="train")
    )
    harmless_prompts: SourceConfig = field(
        default_factory=lambda: SourceConfig(path="Anthropic/hh-rlhf", subset="harmless-base", split="test")
    )


@dataclass
class ModelConfig:
    """The base model every stage starts from, and how its tokenizer is prepared."""

    source: str = field(
        default="smollm2-135m-instruct",
        metadata={
            "help": "'smollm2-135m-instruct' (packaged GGUF, dequantized once and cached), "
            "'tiny-random-llama' (built from a config, for tests), a hub id, or a local folder"
        },
    )
    revision: str | None = field(default=None, metadata={"help": "hub revision (branch, tag or commit)"})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "weights dtype; 'auto' is bfloat16 on CUDA with bf16 support, else float32"}
    )
    max_length: int = field(default=1024, metadata={"help": "longest sequence (tokens) the tokenizer admits"})
    chat_template: str | None = field(
        default=None, metadata={"help": "Jinja chat template to use instead of the tokenizer's own"}
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "allow code from the hub (off by default)"})
    tiny_hidden_size: int = field(default=64, metadata={"help": "tiny-random-llama: hidden size"})
    tiny_layers: int = field(default=2, metadata={"help": "tiny-random-llama: number of layers"})


@dataclass
class CoreConfig:
    """Settings shared by every stage. Each plugin adds its own section, named after it."""

    seed: int = field(default=0, metadata={"help": "seed for every stage (data order, init, sampling)"})
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata={"help": "'auto' picks CUDA when available, else CPU"}
    )
    # How responses are generated, not what: like device, the engine is left out of stage keys (every
    # stage prints the engine it chose; samples and ppo record it in stats.json), so switching engines
    # reuses finished stages. config.yaml keeps the setting.
    engine: Literal["auto", "hf", "vllm"] = field(
        default="auto",
        metadata={"help": "generation engine for samples, evaluation answers and PPO rollouts: 'auto' is "
                  "vllm when it is importable and CUDA is present, else hf (transformers generate)"},
    )
    tensor_parallel_size: int = field(
        default=1, metadata={"help": "vllm engine: GPUs each generating model is split over (tensor parallel)"}
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    evaluate: list[str] = field(
        default_factory=lambda: ["heldout_reward"],
        metadata={"help": "evaluation stages run on every policy of the run (e.g. heldout_reward)"},
    )


@dataclass
class RunConfig:
    """The resolved config of one run: the core sections plus one section per stage plugin."""

    profile: str
    core: CoreConfig
    sections: dict[str, Any]  # plugin name -> instance of its config dataclass

    def section(self, name: str) -> Any:
        """A core section (``model``, ``data``, ``seed``...) or a plugin's section, by dotted path."""
        head, _, rest = name.partition(".")
        obj = self.sections[head] if head in self.sections else getattr(self.core, head)
        for part in filter(None, rest.split(".")):
            obj = getattr(obj, part)
        return obj

    def to_dict(self, include_secrets: bool = False) -> dict:
        """Plain nested dict, as saved in ``config.yaml``; fields marked secret are left out."""
        out = {"profile": self.profile, **to_plain(self.core, include_secrets)}
        out.update({name: to_plain(cfg, include_secrets) for name, cfg in sorted(self.sections.items())})
        return out


def to_plain(value: Any, include_secrets: bool = False) -> Any:
    """Dataclasses to dicts, recursively, dropping fields whose metadata says ``secret``."""
    if dataclasses.is_dataclass(value):
        return {
            f.name: to_plain(getattr(value, f.name), include_secrets)
            for f in dataclasses.fields(value)
            if include_secrets or not f.metadata.get("secret")
        }
    if isinstance(value, (list, tuple)):
        return [to_plain(v, include_secrets) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v, include_secrets) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------- profiles


def profile_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in files(PROFILES_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def read_profile(name: str) -> dict:
    """A profile's YAML as a dict, with ``extends:`` resolved (the child's keys win)."""
    names = profile_names()
    if name not in names:
        raise ConfigError(f"unknown profile '{name}'{_did_you_mean(name, names)}; available: {', '.join(names)}")
    resource = files(PROFILES_PACKAGE) / f"{name}.yaml"
    try:
        data = yaml.safe_load(resource.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{resource}: not valid YAML: {str(err).splitlines()[0]}") from None
    parent = data.pop("extends", None)
    return deep_merge(read_profile(parent), data) if parent else data


def deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ------------------------------------------------------------------------------------------- resolution


def resolve_config(profile: str, overrides: list[str], plugin_configs: dict[str, type]) -> RunConfig:
    """Defaults <- profile <- ``--set`` overrides, type checked. ``plugin_configs``: section name -> dataclass."""
    return build_run_config(profile, read_profile(profile), overrides, plugin_configs)


def build_run_config(profile: str, raw: dict, overrides: list[str], plugin_configs: dict[str, type]) -> RunConfig:
    """A run config from a profile's raw dict plus ``--set`` overrides, every value type checked."""
    raw = copy.deepcopy(raw)  # overrides must not leak into the caller's dict
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, found '{override}'")
        set_dotted(raw, key.strip(), _OverrideText(value))
    schema = {"profile": str, **typing.get_type_hints(CoreConfig), **plugin_configs}
    valid = valid_keys(schema)
    for key in _leaf_keys(raw):
        if key not in valid:
            raise ConfigError(f"unknown config key '{key}'{_did_you_mean(key, valid)}")
    raw.pop("profile", None)
    core = build(CoreConfig, {k: raw.pop(k) for k in list(raw) if k not in plugin_configs}, "")
    sections = {name: build(cls, raw.get(name, {}), name) for name, cls in plugin_configs.items()}
    return RunConfig(profile=profile, core=core, sections=sections)


class _OverrideText(str):
    """A value typed on the command line: parsed as YAML unless the field wants a string."""


def set_dotted(raw: dict, key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{key}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def build(cls: type, raw: Any, prefix: str) -> Any:
    """An instance of dataclass ``cls`` from ``raw``, checking every value's type."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"'{prefix}' must be a section (key: value pairs), found {raw!r}")
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for f in _fields(cls):
        if f.name in raw:
            kwargs[f.name] = coerce(raw[f.name], hints[f.name], _join(prefix, f.name))
    return cls(**kwargs)


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` checked against (and, for command-line text, parsed as) ``annotation``."""
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, key)
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if isinstance(value, _OverrideText):
        if annotation is str or (origin in (typing.Union, types.UnionType) and str in args and value.lower() not in ("null", "none", "~")):
            return str(value)
        value = _parse_text(value)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"'{key}' must be one of {', '.join(map(str, args))}; found {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ConfigError(f"'{key}' must be a list, found {value!r}")
        return [coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, found {value!r}")
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is Any or (isinstance(annotation, type) and isinstance(value, annotation) and not (
        isinstance(value, bool) and annotation is not bool
    )):
        return value
    raise ConfigError(f"'{key}' must be {_type_name(annotation)}, found {value!r}")


def _parse_text(text: str) -> Any:
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return str(text)
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as text; a researcher means a number
        except ValueError:
            pass
    return value


def valid_keys(schema: dict[str, Any]) -> list[str]:
    """Every dotted key the schema admits, sections included."""
    keys = []

    def walk(annotation: Any, prefix: str) -> None:
        keys.append(prefix)
        if dataclasses.is_dataclass(annotation):
            hints = typing.get_type_hints(annotation)
            for f in _fields(annotation):
                walk(hints[f.name], _join(prefix, f.name))

    for name, annotation in schema.items():
        walk(annotation, name)
    return keys


def describe_fields(cls: type, prefix: str = "", defaults: Any = None) -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every leaf field of a config dataclass: what ``harness list`` prints.
    A nested section's defaults are those of the instance its parent makes (``data.prompts.path`` is
    'seed:preferences', not SourceConfig's own 'seed')."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in _fields(cls):
        key = _join(prefix, f.name)
        if defaults is not None:
            default = getattr(defaults, f.name)
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(describe_fields(hints[f.name], key, default))
        else:
            rows.append((key, default, f.metadata.get("help", "")))
    return rows


def _leaf_keys(raw: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in raw.items():
        dotted = _join(prefix, str(key))
        keys.extend(_leaf_keys(value, dotted) if isinstance(value, dict) and value else [dotted])
    return keys


def _fields(cls: type) -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(cls)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _did_you_mean(key: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(annotation: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))
