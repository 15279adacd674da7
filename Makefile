# Quick start: `make demo` (main job on synthetic data, CPU) and `make test`.
# Both create .venv on first use and install the project into it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test setup browser clean

$(VENV)/.installed: pyproject.toml setup.py posedistill/csrc/jpeg_band.c
	$(PYTHON) -m venv $(VENV)
	# CPU build of torch from the local wheel: never let a dependency pull a CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q "numpy>=1.24" cython setuptools wheel
	# xtcocotools' PyPI wheel is built against numpy 1.x; build it against the installed numpy.
	$(PIP) install -q --no-build-isolation --no-binary xtcocotools xtcocotools
	# also builds the posedistill._jpeg_band C extension (needs gcc and the libjpeg headers; skipped without)
	$(PIP) install -q -e ".[dev,onnx]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/posedistill demo

# Debian's chromium for the test that loads `posedistill serve`'s page (playwright drives it; nothing
# is downloaded from playwright's CDN). Without root or apt the test is skipped, except under CI=true.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1)); } || \
		echo "chromium not installed: the browser test of the server page will be skipped"

test: setup browser
	# One OpenMP thread per test worker: two workers x two threads on 2 cores stall each other.
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) runs
