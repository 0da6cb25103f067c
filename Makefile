# `make test` and `make demo` set everything up themselves on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_DIR ?= /usr/share/datasets/fashion-mnist
DEMO_OUT ?= demo-out

.PHONY: test demo install data bench docs clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-docs.txt requirements-dev.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-docs.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Debian ships Fashion-MNIST; install it when missing and we are root.
data:
	@if [ -z "$$SRAMSIM_DATA" ] && [ ! -d "$(FASHION_DIR)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian package dataset-fashion-mnist"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' or set SRAMSIM_DATA"; exit 2; \
	  fi; \
	fi

# Static checks first (ruff: lint and import order; mypy: types, strict; both configured in
# pyproject.toml), then the suite. SRAMSIM_DOCS_REQUIRED: the docs site must build here
# (tests/test_docs.py skips it only where mkdocs is not installed and this is unset).
test: $(STAMP)
	$(PY) -m ruff check sramsim fusion
	$(PY) -m mypy
	SRAMSIM_DOCS_REQUIRED=1 $(PY) -m pytest -q

# The documentation site, built strictly (any warning fails) into site/.
docs: $(STAMP)
	$(PY) -m mkdocs build --strict -d site

demo: $(STAMP) data
	$(VENV)/bin/sramsim demo --out $(DEMO_OUT)
	$(VENV)/bin/fusion demo --base $(DEMO_OUT)/cache/base-cnn-8bit.pt --out $(DEMO_OUT)/generator

bench: $(STAMP)
	$(PY) benchmarks/bench_inject.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) site
