#!/usr/bin/env bash
# The mechanics tests on a lent machine whose CPU and GPU differ from the development machine's:
# first on two of its CPU cores with the GPU hidden (answers must stay byte-identical under batch
# padding on whatever bf16 kernels that CPU has: AVX-512-bf16 or AMX), then on its GPU (device and
# dtype picked automatically). Nothing there can be downloaded, so the caller carries:
#   .whl/      wheels of the packages that machine lacks (pip download --python-version 3.12 ...)
#   .devcache/ the tiny test model and the tokenizer (ASSISTANT_CACHE), built here by `make test`
# Logs go to $OUT (the device tool's folder) or ./device-logs. Usage: bash bench/device_check.sh [cpu|gpu]
set -u
only=${1:-}
out=${OUT:-device-logs}; mkdir -p "$out"
{ lscpu | grep -E "Model name|^CPU\(s\)"; grep -o -w -E "amx_(bf16|tile|int8)|avx512_bf16|avx512f|avx2" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
  nvidia-smi -L 2>/dev/null; } | tee "$out/machine.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD:$PWD/tests ASSISTANT_CACHE=$PWD/.devcache HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -c "import torch, transformers, peft, trl; print('torch', torch.__version__, torch.backends.cpu.get_cpu_capability(),
'| transformers', transformers.__version__, '| peft', peft.__version__, '| trl', trl.__version__)" | tee -a "$out/machine.txt"
tests="tests/test_generation.py tests/test_training.py"
probe='import torch; from assistant.config import ModelSettings as S; from assistant.model.engine import Engine; from assistant.model.loading import load_model; from tiny_model import TINY
for dt in ("float32", "bfloat16"):
    e = Engine(*load_model(S(name=TINY, dtype=dt)), max_new_tokens=8, batch_size=16)
    print(e.device, dt, torch.get_num_threads(), "threads, decoding plan (min_rows):", e.plan())'
CUDA_VISIBLE_DEVICES= taskset -c 0,1 python3 -c "$probe" 2>&1 | grep min_rows | tee -a "$out/machine.txt"
python3 -c "$probe" 2>&1 | grep min_rows | tee -a "$out/machine.txt"
[ "$only" != gpu ] && echo "== CPU, 2 cores, GPU hidden" &&
CUDA_VISIBLE_DEVICES= timeout 300 taskset -c 0,1 python3 -m pytest -q -p no:cacheprovider $tests --durations=3 2>&1 \
  | tee "$out/cpu.log" | tail -25
[ "$only" != cpu ] && echo "== GPU" &&
timeout 240 python3 -m pytest -q -p no:cacheprovider $tests --durations=3 2>&1 | tee "$out/gpu.log" | tail -25
