"""Wall time and peak memory of a block of work.

CPU: peak resident set size of this process and its children, sampled by a background thread.
CUDA: ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` per device after a reset, plus the
device memory in use as NVML reports it (all processes, CUDA context included) when ``pynvml`` is
installed, or why not. When there is no CUDA device the result says so, with the reason, rather than
leaving the field out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil


class PeakMemorySampler:
    """Samples the RSS of this process plus its children every ``interval`` seconds; keeps the peak."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak_rss_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="peak-memory-sampler", daemon=True)
        self._process = psutil.Process()

    def __enter__(self) -> PeakMemorySampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        total = 0
        try:
            total = self._process.memory_info().rss
            for child in self._process.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:  # the child ended between listing and reading
                    pass
        except psutil.Error:
            return
        self.peak_rss_bytes = max(self.peak_rss_bytes, total)


def _cuda_start() -> str | None:
    """Reset CUDA peak counters; return why CUDA is not measured, or None when it is."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    for device in range(torch.cuda.device_count()):
        torch.cuda.reset_peak_memory_stats(device)
    return None


def _nvml_used(device: int) -> int | str:
    """Device memory in use per NVML (bytes), or why it is not known."""
    try:
        import pynvml
    except ImportError:
        return "not measured: pynvml is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(device)).used)
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError as err:  # e.g. no driver access inside a container
        return f"not measured: NVML error {err}"


def _cuda_peaks() -> list[dict]:
    import torch

    devices = []
    for device in range(torch.cuda.device_count()):
        used = _nvml_used(device)
        devices.append({
            "device": device,
            "name": torch.cuda.get_device_name(device),
            "max_memory_allocated_bytes": torch.cuda.max_memory_allocated(device),
            "max_memory_reserved_bytes": torch.cuda.max_memory_reserved(device),
            # at the end of the block: NVML has no peak counter
            **({"nvml_used_bytes": used} if isinstance(used, int) else {"nvml_used": used}),
        })
    return devices


@contextmanager
def measure() -> Iterator[dict]:
    """Yield a dict that, when the block ends, holds wall time, peak RSS and CUDA peaks (or why not)."""
    result: dict = {}
    skipped = _cuda_start()
    start = time.perf_counter()
    with PeakMemorySampler() as sampler:
        try:
            yield result
        finally:
            result["wall_s"] = round(time.perf_counter() - start, 3)
    result["peak_rss_bytes"] = sampler.peak_rss_bytes
    result["cuda"] = {"skipped": skipped} if skipped else {"devices": _cuda_peaks()}
