# cryodet-dask: two commands on a fresh machine -- `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# The CPU build of PyTorch that lies on disk here; installed first so that no
# multi-GB CUDA wheel is pulled in by the permissive `torch>=` requirement.
TORCH_CPU ?= torch==2.13.0
DEMO_DIR ?= demo_out

.PHONY: venv copick-venv demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_CPU)
	$(PIP) install -q -e '.[test,cluster,bench]'
	touch $@

venv: $(VENV)/.installed

# The real `copick` package from PyPI, for tests/test_copick_conformance.py only (the test calls this
# target): copick pins zarr<3, so it lives in a venv of its own (gitignored), built once per pinned version.
COPICK_VENV    ?= .venv-copick
COPICK_VERSION ?= 1.31.0
$(COPICK_VENV)/.installed-$(COPICK_VERSION):
	rm -rf $(COPICK_VENV)
	$(PYTHON) -m venv $(COPICK_VENV)
	$(COPICK_VENV)/bin/pip install -q 'copick==$(COPICK_VERSION)'
	touch $@

copick-venv: $(COPICK_VENV)/.installed-$(COPICK_VERSION)

demo: $(VENV)/.installed
	$(VENV)/bin/cryodet-dask demo $(DEMO_DIR)

test: $(VENV)/.installed
	$(VENV)/bin/mypy cryodet_dask
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: $(VENV)/.installed
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(COPICK_VENV) $(DEMO_DIR) build *.egg-info
