# One-command set-up: every target below creates/refreshes .venv and installs what it needs.
# On a machine without an NVIDIA GPU the CPU build of torch is installed (no multi-GB CUDA download); set
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu if your pip would otherwise pick a CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
EXTRAS ?= dev,train,corpus,conversion,archive,piper
PYTEST_ARGS ?=

.PHONY: demo train test lint bench gpu-check install clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if $(PY) -c "import torch" 2>/dev/null; then echo "torch already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch; \
	else $(PY) -m pip install -q $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) "$(TORCH_SPEC)"; fi
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) examples/demo.py

# The longer recipe beside the demo (about 1.5 h on 2 cores): the demo's settings for TRAIN_STEPS steps, evaluated
# across voices, written Hub-ready (model card with the tables) to TRAIN_DIR; rerunning resumes its last checkpoint.
# TRAIN_PATCH_FEATURES=waveform trains the original raw-waveform patches instead of log spectra. TRAIN_AUGMENTATION
# adds run_pretraining.py's window augmentation, e.g. '--speed_perturbation 0.15 --random_eq_db 8 --noise_snr_db 20,40
# --augmentation_probability 0.5'; at this budget it lowered every figure (docs/training.md), so it is off by default.
# TRAIN_EXTRA_VOICES=festival (default) also trains on the passages in Festival's ked voice, which lifts the unheard
# piper voice from 7x to 19x chance: it needs `apt-get install festival festvox-kdlpc16k`; TRAIN_EXTRA_VOICES= skips it.
TRAIN_STEPS ?= 6000
TRAIN_PATCH_FEATURES ?= log_spectrum
TRAIN_AUGMENTATION ?=
TRAIN_EXTRA_VOICES ?= festival
TRAIN_DIR ?= outputs/vatt-train-$(TRAIN_PATCH_FEATURES)

train: $(VENV)/.installed
	$(PY) examples/run_pretraining.py --model_preset cpu --per_device_train_batch_size 64 --learning_rate 5e-4 \
		--max_train_steps $(TRAIN_STEPS) --eval_steps 1000 --logging_steps 100 --checkpointing_steps 500 \
		--checkpoints_total_limit 1 --config_overrides '{"audio_config": {"patch_features": "$(TRAIN_PATCH_FEATURES)"}}' \
		$(TRAIN_AUGMENTATION) --extra_training_voices "$(TRAIN_EXTRA_VOICES)" --output_dir $(TRAIN_DIR) --resume_from_checkpoint latest

test: $(VENV)/.installed
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# glibc hands buffers above its mmap threshold back to the OS on free, so every large attention buffer is page-faulted
# in again on the next call; keeping them in the heap makes long-input timings stable (see benchmarks/RESULTS.md).
BENCH_MALLOC_ENV := MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296

bench: $(VENV)/.installed
	$(BENCH_MALLOC_ENV) $(PY) benchmarks/run_all.py --output benchmarks/RESULTS.md

# One table on one GPU in at most 8 minutes (see benchmarks/README.md); says so and exits 0 without a GPU.
gpu-check: $(VENV)/.installed
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) .pytest_cache
