# Set-up is part of every target: a fresh machine with only Python needs nothing else.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup quickstart test test-slow test-distributed test-readme test-extras lint bench clean

setup: $(VENV)/.alignkit-installed

$(VENV)/.alignkit-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# The CPU torch wheel where this machine keeps one locally (no index: never pulls a CUDA build);
	@# elsewhere pip resolves torch from the index in the next step, as for any user. --no-deps because
	@# the local folder holds only torch: its own requirements come from the index with the package.
	-$(PY) -m pip install -q --no-index --no-deps torch==2.13.0 2>/dev/null
	$(PY) -m pip install -q -e ".[dev,deepspeed]"
	touch $@

quickstart: setup
	$(VENV)/bin/alignkit quickstart

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

test-distributed: setup
	$(PY) -m pytest -q -m distributed

# The README's documented `alignkit train` commands, word for word and in order, from a fresh folder
# (slow: 46 s on 2 idle cores, `make test-readme`; ~5 min with other jobs beside it).
test-readme: setup
	$(PY) -m pytest -q -m slow tests/cli/test_readme_commands.py

# Optional extras' own tests (skipped by `make test` where the extra is absent): lm-evaluation-harness
# (~200 MB, ~2 min to install) for `alignkit eval lm-eval` and its training callback.
test-extras: setup
	$(PY) -m pip install -q -e ".[lm-eval]"
	$(PY) -m pytest -q -m "slow or not slow" tests/eval/test_lm_harness.py

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache
