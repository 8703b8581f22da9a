VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-output
DEMO_CITY_DIR ?= demo-city-output
LEAFLET := percept/web/static/vendor/leaflet
LEAFLET_VERSION := 1.9.4
SWAGGER_UI := percept/web/static/vendor/swagger-ui
SWAGGER_UI_VERSION := 5.35.0
REDOC := percept/web/static/vendor/redoc
REDOC_VERSION := 2.5.4

.PHONY: setup demo demo-city test bench clean

setup: $(STAMP)

# pip builds the C kernels; an editable install byte-compiles nothing, so compileall does (startup time).
$(STAMP): pyproject.toml percept/model/_kernels.c percept/model/_tiles.c percept/model/_arrays.h
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,test]'
	$(PY) -m compileall -q percept
	rm -rf build/leaflet && mkdir -p build/leaflet $(LEAFLET)
	cd build/leaflet && npm pack --silent leaflet@$(LEAFLET_VERSION) >/dev/null && tar xzf leaflet-$(LEAFLET_VERSION).tgz
	cp -R build/leaflet/package/dist/leaflet.js build/leaflet/package/dist/leaflet.css build/leaflet/package/dist/images $(LEAFLET)/
	rm -rf build/swagger-ui build/redoc && mkdir -p build/swagger-ui build/redoc $(SWAGGER_UI) $(REDOC)
	cd build/swagger-ui && npm pack --silent swagger-ui-dist@$(SWAGGER_UI_VERSION) >/dev/null && tar xzf swagger-ui-dist-$(SWAGGER_UI_VERSION).tgz
	cp build/swagger-ui/package/swagger-ui-bundle.js build/swagger-ui/package/swagger-ui.css $(SWAGGER_UI)/
	cd build/redoc && npm pack --silent redoc@$(REDOC_VERSION) >/dev/null && tar xzf redoc-$(REDOC_VERSION).tgz
	cp build/redoc/package/bundles/redoc.standalone.js $(REDOC)/
	touch $(STAMP)

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
