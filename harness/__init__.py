"""rsdpo-harness: train and compare LLM alignment methods (RS, PPO, DPO, RS-DPO) the way the RS-DPO paper does."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rsdpo-harness")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
