# Development commands. `make setup` is run by the others when needed; see README.md.
SHELL := /bin/bash
DEV_HOME ?= $(or $(RECAPTURE_DEV_HOME),$(HOME)/.cache/comfyui-recapture-dev)
VENV := $(DEV_HOME)/venv
PY := $(VENV)/bin/python
PORT ?= 8188

.PHONY: setup test test-unit test-comfy test-browser serve demo bench-render

setup:
	@bash scripts/dev-setup.sh

# The README's test command: every tier (library, real ComfyUI server, real browser).
# pytest's exit code 5 ("no tests collected", e.g. a -k that matches nothing) is reported, not failed.
test: setup
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

# the library alone: no ComfyUI (neither its server nor its modules) and no browser
test-unit: setup
	$(PY) -m pytest -m "not comfy and not comfy_code and not browser" $(PYTEST_ARGS)

# ComfyUI: its server, and its own modules as the reference
test-comfy: setup
	$(PY) -m pytest -m "(comfy or comfy_code) and not browser" $(PYTEST_ARGS)

test-browser: setup
	$(PY) -m pytest -m browser $(PYTEST_ARGS)

# ComfyUI with this pack on http://127.0.0.1:$(PORT) (Ctrl-C stops it).
serve: setup
	$(PY) scripts/serve.py --port $(PORT)

# The main job on the bundled sample: anchor video and mask from the shipped workflow.
demo: setup
	$(PY) scripts/demo.py

bench-render: setup
	$(PY) bench/render.py
