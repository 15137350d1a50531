# Entry points: `make demo` and `make test` work on a fresh machine (each sets up .venv first).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt setup.py | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: venv test demo bench fuzz soak lint clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $@

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(PY) -m flake8 fusion_nodes tests launch setup.py

demo: venv
	$(PY) -m fusion_nodes.tools.demo

bench: venv
	$(PY) -m fusion_nodes.tools.bench

# 10k hypothesis cases per decoder test and 2k aligner sequences (CI runs the same tests with
# 100 each); prints per-test counts.
FUZZ_EXAMPLES ?= 10000
FUZZ_ALIGNER_EXAMPLES ?= 2000
fuzz: venv
	FUSION_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUSION_FUZZ_ALIGNER_EXAMPLES=$(FUZZ_ALIGNER_EXAMPLES) \
		$(PY) -m pytest -q -m fuzz --hypothesis-show-statistics -p no:cacheprovider

# Ten minutes of real-time replay (looping the demo bag) through the live stack.
SOAK_SECONDS ?= 600
soak: venv
	$(PY) -m fusion_nodes.tools.soak --duration $(SOAK_SECONDS)

clean:
	rm -rf build install log .pytest_cache .hypothesis
