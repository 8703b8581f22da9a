VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-output
DEMO_CITY_DIR ?= demo-city-output

.PHONY: setup lock demo demo-city test bench clean

setup: $(STAMP)

# Exact versions from requirements.lock, then the package itself without further dependencies. Its build
# vendors the web page's assets (Leaflet, Swagger UI, Redoc) from npm's tarballs, kept in build/web-assets
# (tools/web_assets.py), and compiles the C kernels; an editable install byte-compiles nothing, so
# compileall does (startup time).
$(STAMP): pyproject.toml setup.py requirements.lock tools/build_backend.py tools/web_assets.py percept/model/_kernels.c percept/model/_tiles.c percept/model/_arrays.h percept/model/_cpu.h
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e '.[all,test]'
	$(PY) -m compileall -q percept
	touch $(STAMP)

# After changing a dependency in pyproject.toml: `.venv/bin/pip install -e '.[all,test]'`, then `make lock`.
lock:
	$(PY) tools/lock_requirements.py

demo: setup
	$(PY) -m percept.demo $(DEMO_DIR)

demo-city: setup
	$(PY) -m percept.demo_city $(DEMO_CITY_DIR)

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(DEMO_DIR) $(DEMO_CITY_DIR) .pytest_cache
