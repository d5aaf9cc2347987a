# photocalib: `make demo` runs the pipeline on the built-in simulated survey; `make test` runs
# the tests. Both create the virtual environment they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= demo-output

.PHONY: demo demo-area test test-slow bench lint clean venv chromium docs docs-clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/photocalib demo --out $(DEMO_OUT)

# The pixel-area map of real distorted WCSs from astropy's test data, and how wrong
# astropy's proj_plane_pixel_area is on them.
demo-area: $(STAMP)
	$(PY) examples/pixel_area_demo.py --out $(DEMO_OUT)/pixel-area

# The report test opens the HTML report in headless Chromium; install Debian's when missing
# (as root on CI; elsewhere the test skips with a reason if it cannot be installed).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the report-rendering test will skip"; }

# The tests, then every docstring example in the library (they must run as written).
test: $(STAMP) chromium
	$(PY) -m pytest -q -p no:cacheprovider
	$(PY) -m pytest -q -p no:cacheprovider --doctest-modules src/photocalib

test-slow: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m slow

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# The documentation site: Sphinx with warnings as errors, the examples/ gallery executed.
# Offline by default; PHOTOCALIB_DOCS_INTERSPHINX=1 links to astropy, NumPy, Dask and GalSim.
DOCS_STAMP := $(VENV)/.docs-stamp

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) -m sphinx -E -W --keep-going -b html docs docs/_build/html
	@echo "open docs/_build/html/index.html"

docs-clean:
	rm -rf docs/_build docs/api/generated docs/auto_examples

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info src/*.egg-info docs/_build docs/api/generated docs/auto_examples
