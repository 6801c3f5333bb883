"""Read a finished run folder: results.json, config.yaml, manifest.json and the stage files the report plots.

Plain json/yaml on files; nothing here imports the harness or loads a model. A malformed file fails with
one line naming the file, the record and the field (``ReportError``, a ``ValueError``)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

RESULTS = "results.json"

# Which fields each evaluation must carry for the tables (results_schema: written by the benchmark stages).
REQUIRED_EVALUATION_FIELDS = {
    "heldout_reward": ("reward.mean", "reward.ci_low", "reward.ci_high"),
    "mt_bench": ("turn_1", "turn_2", "overall"),
    "alpaca_eval": ("win_rate", "standard_error"),
    "harmless_reward": ("reward.mean", "reward.ci_low", "reward.ci_high"),
    "unsafe_share": ("unsafe_share", "parse_failure_rate"),
}


class ReportError(ValueError):
    """A run folder the report cannot read; the message names the file, record and field."""


def base_name(stage: str) -> str:
    """'rsdpo[rsdpo.eta=0.8]' -> 'rsdpo'; 'heldout_reward@rs' stays as it is."""
    return stage.split("[", 1)[0]


def get_path(record: dict, dotted: str):
    """record['a']['b'] for 'a.b'; None when any part is missing."""
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def number(value) -> float | None:
    """A finite float, or None for missing / null / non-numeric / nan values."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


@dataclass
class RunData:
    """Everything a report reads from one run folder."""

    root: Path
    results: dict
    config: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    # `harness profile`'s summary when it sits in the run folder (RUN_DIR/profile.json): analytic estimates
    profile_summary: dict = field(default_factory=dict)

    def estimate_for(self, method: str, stage: str | None = None) -> float | None:
        """Estimated peak bytes of a method (stage None) or of one of its stages, from profile_summary."""
        if stage is None:
            rows = [m for m in self.profile_summary.get("methods") or [] if isinstance(m, dict)
                    and m.get("method") == base_name(method)]
        else:
            rows = [p for p in self.profile_summary.get("phases") or [] if isinstance(p, dict)
                    and p.get("method") == base_name(method) and p.get("stage") == base_name(stage)]
        values = [number(r.get("estimated_bytes")) for r in rows]
        values = [v for v in values if v is not None]
        return max(values) if values else None

    @property
    def results_path(self) -> Path:
        return self.root / RESULTS

    @property
    def methods(self) -> dict[str, dict]:
        return self.results.get("methods") or {}

    @property
    def stages(self) -> dict[str, dict]:
        return self.results.get("stages") or {}

    @property
    def sweep(self) -> dict | None:
        return self.results.get("sweep") or None

    def stage_dir(self, name: str) -> Path | None:
        entry = self.stages.get(name) or self.methods.get(name)
        return self.root / entry["dir"] if entry and entry.get("dir") else None

    def evaluation(self, method: str, name: str) -> dict | None:
        return (self.methods.get(method, {}).get("evaluations") or {}).get(name)

    def evaluations_present(self) -> list[str]:
        seen = []
        for entry in self.methods.values():
            for name in entry.get("evaluations") or {}:
                if name not in seen:
                    seen.append(name)
        return seen

    def point_values(self, label: str | None) -> dict[str, str]:
        """The swept values of a sweep point label ('rsdpo.eta=0.8' -> {'rsdpo.eta': '0.8'})."""
        if not label or not self.sweep:
            return {}
        for point in self.sweep.get("points") or []:
            if point.get("label") == label:
                return dict(point.get("values") or {})
        return {}

    def setting(self, key: str, point: str | None = None):
        """A config value ('rsdpo.eta') at a sweep point: the point's value, else config.yaml's."""
        values = self.point_values(point)
        if key in values:
            return _parse_scalar(values[key])
        return get_path(self.config, key)

    def ancestors(self, name: str) -> list[str]:
        """Every stage a stage reads, directly or not (depth first, each once)."""
        seen: list[str] = []
        stack = list(((self.stages.get(name) or self.methods.get(name) or {}).get("inputs") or {}).values())
        while stack:
            current = stack.pop(0)
            if current in seen:
                continue
            seen.append(current)
            stack.extend(((self.stages.get(current) or {}).get("inputs") or {}).values())
        return seen

    def evaluation_stages(self, method: str) -> list[str]:
        """Stages that evaluate this method's policy (their inputs name it as 'policy')."""
        return [n for n, s in self.stages.items() if (s.get("inputs") or {}).get("policy") == method]

    def reward_model_of(self, name: str) -> str | None:
        """The reward-model stage a stage depends on (the nearest ancestor with a held-out accuracy)."""
        for ancestor in self.ancestors(name):
            if number(get_path(self.stages.get(ancestor, {}), "stats.heldout_accuracy")) is not None:
                return ancestor
        return None


def _parse_scalar(text):
    if not isinstance(text, str):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_run(run_dir: Path | str) -> RunData:
    """Read and check a run folder; ReportError when results.json is missing or malformed."""
    root = Path(run_dir)
    path = root / RESULTS
    if not path.is_file():
        raise ReportError(f"{path}: not found; a report needs a finished `harness run` (its results.json)")
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    check_results(results, path)
    config = _read_yaml(root / "config.yaml")
    manifest = {}
    if (root / "manifest.json").is_file():
        try:
            manifest = json.loads((root / "manifest.json").read_text())
        except json.JSONDecodeError as err:
            raise ReportError(f"{root / 'manifest.json'}: not valid JSON ({err.msg} at line {err.lineno})") from None
    summary = {}
    if (root / "profile.json").is_file():
        try:
            summary = json.loads((root / "profile.json").read_text())
        except json.JSONDecodeError as err:
            raise ReportError(f"{root / 'profile.json'}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(summary, dict) or not isinstance(summary.get("phases", []), list):
            raise ReportError(f"{root / 'profile.json'}: expected `harness profile`'s summary (an object with 'phases')")
    return RunData(root=root, results=results, config=config, manifest=manifest, profile_summary=summary)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ReportError(f"{path}: not valid YAML ({err})") from None
    return loaded if isinstance(loaded, dict) else {}


def check_results(results, path: Path) -> None:
    """The shape the report relies on; one line naming file, record and field when it is not there."""
    if not isinstance(results, dict):
        raise ReportError(f"{path}: expected a JSON object at the top level, found {type(results).__name__}")
    for key in ("methods", "stages"):
        if not isinstance(results.get(key), dict):
            raise ReportError(f"{path}: field '{key}' must be an object (one entry per stage)")
    for name, entry in results["methods"].items():
        where = f"{path}: methods['{name}']"
        if not isinstance(entry, dict):
            raise ReportError(f"{where}: expected an object")
        for key in ("stats", "evaluations"):
            if not isinstance(entry.get(key, {}), dict):
                raise ReportError(f"{where}: field '{key}' must be an object")
        for evaluation, stats in (entry.get("evaluations") or {}).items():
            if not isinstance(stats, dict):
                raise ReportError(f"{where}.evaluations.{evaluation}: expected an object")
            for dotted in REQUIRED_EVALUATION_FIELDS.get(evaluation, ()):
                parent, _, key = dotted.rpartition(".")
                holder = get_path(stats, parent) if parent else stats
                if not isinstance(holder, dict) or key not in holder:
                    raise ReportError(f"{where}.evaluations.{evaluation}: field '{dotted}' missing")
                # null is a legitimate outcome (e.g. every judgment unparseable): shown as a dash
                if holder[key] is not None and number(holder[key]) is None:
                    raise ReportError(f"{where}.evaluations.{evaluation}: field '{dotted}' is {holder[key]!r}, "
                                      "not a number")
    for name, entry in results["stages"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("dir", ""), str):
            raise ReportError(f"{path}: stages['{name}']: expected an object with a 'dir' string")
    sweep = results.get("sweep")
    if sweep is not None and not (isinstance(sweep, dict) and isinstance(sweep.get("keys"), list)
                                  and isinstance(sweep.get("points"), list)):
        raise ReportError(f"{path}: field 'sweep' must be null or an object with 'keys' and 'points' lists")
    for evaluation, pairs in (results.get("comparisons") or {}).items():
        for label, diff in (pairs or {}).items():
            for key in ("mean", "ci_low", "ci_high"):
                if number((diff or {}).get(key)) is None:
                    raise ReportError(f"{path}: comparisons.{evaluation}['{label}']: field '{key}' missing or not a number")


def read_jsonl_rewards(path: Path, key: str = "reward") -> Iterator[dict]:
    """Rows of a stage's JSONL file; ReportError naming the line and field when a reward is not a number."""
    with path.open() as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ReportError(f"{path}: line {line_number}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict) or number(row.get(key)) is None:
                raise ReportError(f"{path}: line {line_number}: field '{key}' missing or not a number")
            yield row
