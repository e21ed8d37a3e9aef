#!/usr/bin/env bash
# The GPU checks in one script: the CUDA tests, then the many-agent cost (the suites' spn-ac,
# spn-ac on the global state, and, when named in STEPS, the suites' spn-ac compiled), the
# engine and the training speed (eager, and compiled) with --device cuda. Each step has its
# own time limit and its own log, so a failing step leaves the others' figures. Results go to
# $OUT (default runs/gpu-check).
#
#     bash benchmarks/gpu_check.sh                  # on a machine with CUDA, from the repo root
#     OUT=/tmp/gpu bash benchmarks/gpu_check.sh
#
# PYTHON (default python3 when .venv is absent) runs everything; the package is read from
# this checkout (PYTHONPATH), so no install is needed beyond its dependencies. DEVICE=cpu
# QUICK=1 runs the same steps on the CPU at tiny sizes: a check of the script, not figures.
# STEPS="tests engine" runs only those steps.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-runs/gpu-check}
mkdir -p "$OUT"
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
DEVICE=${DEVICE:-cuda}
if [ -n "${QUICK:-}" ]; then
    COST=(--quick) ENGINE=(--batches 1 64 --budget 0.2 --selective-repeats 2)
    SPEED=(--steps 400 --updates 5 --learning-starts 64)
else
    COST=() ENGINE=(--budget 1.0) SPEED=(--steps 4000 --updates 100)
fi
export SPNPOLICY_TEST_DEVICE=$DEVICE PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

# many_agents_cost_compiled_16 and _64 run only when named: compiling spn-ac's many-agent
# update can outlast their step limit.
STEPS=${STEPS:-tests many_agents_cost many_agents_cost_state engine train_speed \
    train_speed_compiled}

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log
    local name=$1 limit=$2; shift 2
    [[ " $STEPS " == *" $name "* ]] || return 0
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "[gpu-check] $name: rc $rc in $((SECONDS - start)) s" | tee -a "$OUT/steps.log"
    tail -n 6 "$OUT/$name.log"
}

"$PYTHON" - > "$OUT/device.txt" 2>&1 <<'EOF'
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__,
      "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
EOF
cat "$OUT/device.txt"

step tests 100 "$PYTHON" -m pytest -q -p no:cacheprovider -n 4 tests/test_devices.py \
    tests/spnpolicy/test_devices_every_algorithm.py \
    tests/spnpolicy/test_engine_benchmark_script.py::test_selective_section_runs_on_cuda
step many_agents_cost 200 "$PYTHON" benchmarks/many_agents_cost.py --device "$DEVICE" \
    "${COST[@]}" --out "$OUT/many_agents_cost_$DEVICE.json"
step many_agents_cost_state 200 "$PYTHON" benchmarks/many_agents_cost.py --device "$DEVICE" \
    "${COST[@]}" --full-agents --spn-ac param_head=flat --spn-ac critic_input=state \
    --out "$OUT/many_agents_cost_state_$DEVICE.json"
for n in 16 64; do  # one step per team size, each with its own compile
    step many_agents_cost_compiled_$n 150 "$PYTHON" benchmarks/many_agents_cost.py \
        --device "$DEVICE" "${COST[@]}" --agents $n --full-agents --spn-ac compile=True \
        --out "$OUT/many_agents_cost_compiled_${n}_$DEVICE.json"
done
step engine 80 "$PYTHON" benchmarks/engine.py --device "$DEVICE" --sections reference selective \
    "${ENGINE[@]}" --out "$OUT/engine_$DEVICE.json"
step train_speed 100 "$PYTHON" benchmarks/train_speed.py --device "$DEVICE" --repeats 1 \
    "${SPEED[@]}" --out "$OUT/train_speed_$DEVICE.json"
step train_speed_compiled 180 "$PYTHON" benchmarks/train_speed.py --device "$DEVICE" --repeats 1 \
    "${SPEED[@]}" --compile --paired-rounds 0 --out "$OUT/train_speed_compiled_$DEVICE.json"
