"""What produced a run: library versions, git commit, hardware. Recorded in manifest.json and results.json."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import psutil

LIBRARIES = (
    "rsdpo-harness", "torch", "transformers", "trl", "accelerate", "peft", "datasets",
    "openai", "pandas", "matplotlib", "numpy", "vllm",
)


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(path: Path | None = None) -> dict:
    """The commit of the source tree the harness runs from, and whether it had uncommitted changes."""
    where = Path(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(dirty)}


def hardware() -> dict:
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "cuda_devices": [],
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["cuda_devices"] = [
                {"name": torch.cuda.get_device_name(i), "memory_bytes": torch.cuda.get_device_properties(i).total_memory}
                for i in range(torch.cuda.device_count())
            ]
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def environment() -> dict:
    return {
        "versions": library_versions(),
        "git": git_commit(),
        "hardware": hardware(),
        "argv": redact_argv([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


SECRET_WORDS = ("key", "token", "secret", "password")


def redact_argv(argv: list[str]) -> list[str]:
    """The command line with the value of any ``name=value`` whose name looks secret replaced by '***'."""
    out = []
    for arg in argv:
        name, sep, _ = arg.partition("=")
        secret = sep and any(word in name.lower() for word in SECRET_WORDS)
        out.append(f"{name}=***" if secret else arg)
    return out
