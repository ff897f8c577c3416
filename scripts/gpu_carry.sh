#!/usr/bin/env bash
# Prepares, on a machine with pip access, what scripts/bench_gpu.py needs on an offline GPU machine
# whose image has torch, accelerate, peft and an older transformers but not alignkit's other
# dependencies (the device machine of docs/performance.md, "GPU checks"):
#   .whl/   wheels for CPython 3.12 x86-64 of the versions in this checkout's .venv (transformers, TRL,
#           PEFT, datasets and its dill/multiprocess, DeepSpeed built here from its sdist with its
#           pure-Python needs, Liger kernels), ~22 MB. Not huggingface_hub: the image's 1.33 satisfies
#           transformers and datasets, and this .venv's 2.x needs httpx2, which the image lacks;
#   .tofu   a link to ../shared/data/tofu (carry .tofu/forget10_perturbed.json: the link's file travels).
# Both are in .gitignore, never committed. Run from anywhere:  bash scripts/gpu_carry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -e .tofu ] || ln -s ../shared/data/tofu .tofu

# The exact versions this checkout is tested with (pip --no-deps: each dependency is named).
pins=$($PY - <<'EOF'
import importlib.metadata as m
names = ["transformers", "trl", "peft", "datasets", "dill", "multiprocess", "hjson", "pydantic", "pydantic-core",
         "annotated-types", "typing-inspection"]
print(" ".join(f"{n}=={m.version(n)}" for n in names))
EOF
)
mkdir -p .whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl $pins liger-kernel==0.8.5  # not in .venv: Liger's kernels need triton and CUDA
# DeepSpeed publishes only an sdist; DS_BUILD_OPS=0 gives a pure-Python wheel (its ops build on first use).
ds=$($PY -c 'import importlib.metadata as m; print(m.version("deepspeed"))')
tmp=$(mktemp -d)
$PY -m pip download -q --no-deps --no-binary=:all: -d "$tmp" "deepspeed==$ds"
DS_BUILD_OPS=0 $PY -m pip wheel -q --no-deps --no-build-isolation -w .whl "$tmp"/deepspeed-*.tar.gz
rm -rf "$tmp"
du -sh .whl && ls .whl
