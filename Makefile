# fsoracle: the verbs people type. Every target installs what it needs itself.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEBSTAMP:= $(VENV)/.debian-deps
KZSTAMP := $(VENV)/.kernel-zstd
PYTEST  := $(BIN)/python -m pytest
export FSORACLE_REQUIRE_TOOLS ?= 0

.PHONY: all venv deps test vm-test bench lint format clean
all: test

$(STAMP): pyproject.toml
	@echo ">> creating $(VENV) and installing fsoracle with its dev dependencies"
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

# Debian packages (btrfs-progs 6.14 and QEMU 10 from bookworm-backports, e2fsprogs, zstd...).
# As root they are installed; otherwise the script says what is missing.
$(DEBSTAMP): harness/install-debian-deps.sh | $(STAMP)
	sh harness/install-debian-deps.sh
	$(BIN)/pip install -q 'python-lzo>=1.15,<2'  # needs liblzo2-dev (compressed-size estimates)
	@touch $@

# zstd as the stock kernels' lib/zstd writes it (harness/compress/kernel_zstd.py): python-zstandard
# releases bundling zstd 1.5.2 (6.12) and 1.4.8 (6.1), each in its own directory
$(KZSTAMP): | $(STAMP)
	$(BIN)/pip install -q wheel setuptools cffi  # 0.15.2 builds from its sdist, without isolation
	$(BIN)/pip install -q --no-deps --target $(VENV)/kernel-zstd/1.5.2 'zstandard==0.19.0'
	$(BIN)/pip install -q --no-deps --no-build-isolation --target $(VENV)/kernel-zstd/1.4.8 \
		'zstandard==0.15.2'
	@touch $@

venv: $(STAMP)
deps: $(STAMP) $(DEBSTAMP) $(KZSTAMP)

# unit, property and fast differential tests (budget: 15 min on 2 cores)
test: deps
	$(PYTEST) -m "not slow and (not vm or smoke)" $(PYTEST_ARGS)

# the main job: every test marked vm, plus the slow ones, but not the heavy ones (budget:
# 60 min cold). VM tests that take the kernel_spec fixture run once per kernel in
# VM_KERNELS; a per-kernel summary table ends the output.
# The kernel-build tests (tests/vm/test_kbuild_vm.py) build build:6.12+skinny-bg-tree (cold
# ~11 min) and the baseline build:6.12 after it (incremental, ~4 min) when they are not in
# ~/.cache/fsoracle/kernels/build.
VM_KERNELS ?= debian:6.12,debian:6.1
vm-test: deps
	sh harness/install-debian-deps.sh --kbuild
	FSORACLE_VM_KERNELS=$(VM_KERNELS) $(PYTEST) -m "(vm or slow) and not heavy" $(PYTEST_ARGS)

# the cases over vm-test's budget (marker heavy): the KASAN + lockdep kernel (a 31-min cold
# build here) and its runs, the BTRFS_DEBUG kernel (16 min) mounting extent-tree-v2 images,
# the 5 000-op x 4-process stress runs on both kernels (~30 min)
.PHONY: vm-test-heavy
vm-test-heavy: deps
	sh harness/install-debian-deps.sh --kbuild
	FSORACLE_VM_KERNELS=$(VM_KERNELS) $(PYTEST) -m heavy $(PYTEST_ARGS)

# benchmarks and seed reproductions, default presets (budget: 30 min)
bench: deps
	$(BIN)/python benchmarks/run_all.py

# per-series reviewer reports (issue 12): results/reports/SERIES.md and .html, index.html.
# Runs the fast and slow experiments (the ext4 seed-scale study takes ~5 min); VM ones only
# with REPORT_ARGS="--run-slow --run-vm"; reuse earlier results with --from DIR.
.PHONY: report
REPORT_ARGS ?= --run-slow
report: deps
	$(BIN)/fsoracle report all --out results/reports $(REPORT_ARGS)

# typed strictly: the model, and the seams the studies stand on (targets, safe I/O, options,
# the stress family's experiments)
TYPED := model harness/target harness/safeio.py harness/argtypes.py harness/cli.py \
	harness/series.py harness/kernel/patchsets.py \
	harness/workload/ontarget.py harness/workload/stress.py harness/workload/crash.py \
	harness/workload/replay.py harness/workload/fsx.py harness/workload/diffrun.py \
	harness/workload/differential.py harness/workload/opstable.py harness/workload/view.py \
	harness/workload/session.py
TYPED += harness/ext4 harness/etv2 harness/mount  # study packages checked with mypy --strict
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict --follow-imports=silent $(TYPED)
	$(BIN)/python -m harness.workload.opstable --check

# the op table built into the guest driver, rewritten from the op registry
# (model/fsstate/ops.py) after an op is added or changed there
.PHONY: ops-table
ops-table: $(STAMP)
	$(BIN)/python -m harness.workload.opstable --write

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
