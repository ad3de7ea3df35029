#!/usr/bin/env bash
# GPU checks and benchmark of the template on one GPU, as one script that fits a short device
# lease (<= 8 minutes on one H100 by default, no network there). Steps, each a fresh process:
#   tests         tests/engine/test_gpu.py (make test-gpu): the GPU roads, before anything is timed
#   bench         scripts/bench.py --hooks -- trainer=gpu: template vs hand-written loop (5
#                 interleaved repeats), host time per hook, Python calls per step, start-up pairs
#   fit_default   the default fit on the GPU (trainer=gpu; data on the host, precision=auto)
#   fit_gpu_data  the data set held on the GPU (data=fashion_mnist_gpu trainer=gpu)
#   fp16          as fit_gpu_data, trainer.precision=16-mixed (GradScaler)
#   bf16          as fit_gpu_data, trainer.precision=bf16-mixed
#   fashion_gpu   the recipe experiment=fashion_gpu (aimed at >= 94% in <= 5 s; unverified)
#   fashion_gpu_s1, fashion_gpu_s2   the same with seed=1 and seed=2: its aim is a mean of 3 seeds
#   compile       as fit_gpu_data, perf.compile=true (last: the first step to drop when short)
# A failed step is recorded (exit status, last lines of its log) and the next one runs; a step
# gets at most its own cap and what is left of the budget (LIGHTSPEED_BENCH_BUDGET_S, 420 s).
# At the end scripts/bench_gpu_report.py writes bench_gpu.{json,md}: hardware, one row per step
# (test acc, train time, samples/s, time to first step, peak memory, precision), bench.py's
# template/hand ratio, and each failure's last lines.
#
# Usage
#   Here, once (the device has no network and no Debian data set; .whl/ and data/ are ignored):
#     mkdir -p .whl && pip download -d .whl hydra-core omegaconf
#     pip wheel --no-deps -w .whl .whl/antlr4-python3-runtime-*.tar.gz  # an sdist only on PyPI
#     rm -f .whl/*.tar.gz .whl/pyyaml-* .whl/packaging-*  # the device has these, for its Python
#     mkdir -p data/fashion_mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion_mnist/
#   On the device (tool `run`, carry [".whl", "data/fashion_mnist"], timeout_s 540):
#     bash scripts/bench_gpu.sh --copy-to "$OUT"
#   (carry data/fashion_mnist, not all of data/: caches there, data/decoded/ say, would push the
#   carried tree past its 64 MiB; the files: 30 MB)
#   -> benchmarks/results/bench_gpu.{json,md} there; with --copy-to also in $OUT, beside
#      bench_gpu_runs.tar.gz (each step's summary.json, hardware.json, config.yaml and log).
#   Dry run on a CPU (same steps, trainer=cpu data.device=cpu, 32-bit where the CPU lacks
#   16-bit units, a few batches each; the report goes to the results folder, never to
#   benchmarks/results):
#     bash scripts/bench_gpu.sh --dry-run --dir /tmp/bench_gpu_dry
#     LIGHTSPEED_BENCH_DRY_RUN=1 LIGHTSPEED_BENCH_DIR=/tmp/d bash scripts/bench_gpu.sh
#
# Options (and environment variables)
#   --dry-run         LIGHTSPEED_BENCH_DRY_RUN=1   the CPU rehearsal described above
#   --dir DIR         LIGHTSPEED_BENCH_DIR         results folder: one run dir + log per step
#                                                  (default logs/bench_gpu[_dry]/<date_time>)
#   --copy-to DIR                                  also copy the report and a tarball there
#   --list                                         print each step's name and command, run none
#   --budget S        LIGHTSPEED_BENCH_BUDGET_S    seconds for all steps (420; dry run 1800)
#   -- OVERRIDES...   LIGHTSPEED_BENCH_EXTRA       Hydra overrides added to every step (the env
#                                                  variable: split on spaces)
#   PYTHON            the interpreter (default .venv/bin/python if present, else python3)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2

DRY=${LIGHTSPEED_BENCH_DRY_RUN:-0}
[[ $DRY == 1 || $DRY == true || $DRY == yes ]] && DRY=1 || DRY=0
DIR=${LIGHTSPEED_BENCH_DIR:-}
BUDGET=${LIGHTSPEED_BENCH_BUDGET_S:-}
COPY_TO=""
LIST=0
read -r -a EXTRA <<<"${LIGHTSPEED_BENCH_EXTRA:-}"
while (($#)); do
    case $1 in
        --dry-run) DRY=1 ;;
        --dir) DIR=$2; shift ;;
        --copy-to) COPY_TO=$2; shift ;;
        --budget) BUDGET=$2; shift ;;
        --list) LIST=1 ;;
        --) shift; EXTRA+=("$@"); break ;;
        -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench_gpu.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
STAMP=$(date +%Y-%m-%d_%H%M%S)
if ((DRY)); then
    DIR=${DIR:-logs/bench_gpu_dry/$STAMP}
    BUDGET=${BUDGET:-1800}
else
    DIR=${DIR:-logs/bench_gpu/$STAMP}
    BUDGET=${BUDGET:-420}
fi
if ((LIST)); then
    [[ $DIR == /* ]] || DIR=$ROOT/$DIR
else
    mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd) || exit 2
    : >"$DIR/steps.tsv"
fi
if ((DRY)); then
    REPORT_DIR=$DIR  # a rehearsal never replaces the committed record
else
    REPORT_DIR=$ROOT/benchmarks/results
fi

((LIST)) || echo "== lightspeed GPU benchmark$( ((DRY)) && echo ' (DRY RUN on the CPU)'): results in $DIR"
((LIST)) || cat <<'EOF'
   Carrying what the device lacks (run here, in the repository root, before the device run):
     mkdir -p .whl && pip download -d .whl hydra-core omegaconf
     pip wheel --no-deps -w .whl .whl/antlr4-python3-runtime-*.tar.gz && rm -f .whl/*.tar.gz
     mkdir -p data/fashion_mnist && cp /usr/share/datasets/fashion-mnist/*.gz data/fashion_mnist/
   then the device run: tool `run`, carry [".whl", "data/fashion_mnist"]:
     bash scripts/bench_gpu.sh --copy-to "$OUT"
EOF

# --- the interpreter, and the packages the device image lacks ------------------------------
if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"  # the project, installed or not
export PYTHONUNBUFFERED=1
if ((!LIST)) && ! "$PYTHON" -c "import hydra, omegaconf" 2>/dev/null; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        SITE=/tmp/lightspeed_bench_site
        echo "== installing hydra-core, omegaconf, antlr4 from .whl/ into $SITE"
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" --find-links .whl hydra-core omegaconf antlr4-python3-runtime
        export PYTHONPATH="$PYTHONPATH:$SITE"
    fi
    if ! "$PYTHON" -c "import hydra, omegaconf" 2>/dev/null; then
        echo "bench_gpu.sh: hydra-core/omegaconf are missing and .whl/ holds no wheels for them;" \
            "see the carrying lines above" >&2
        exit 2
    fi
fi
# bench.py's start-up pairs run the `lightspeed` console script beside the interpreter
CLI=$("$PYTHON" -c 'import sys, pathlib; print(pathlib.Path(sys.executable).with_name("lightspeed"))')
if ((!DRY && !LIST)) && [[ ! -x $CLI ]]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 ||
        echo "== note: 'pip install -e .' failed here; bench.py runs without start-up pairs"
fi
STARTUP=1  # the dry run too: its report then reads the same start-up keys
((!DRY)) && [[ -x $CLI ]] && STARTUP=2

# --- the data: on the device it travels in data/ (no network, no system copy) --------------
if ((!LIST)) && ! printf '%s\n' "${EXTRA[@]}" | grep -q '^data\.data_dir='; then
    found=""
    for d in data/fashion_mnist data/FashionMNIST/raw data /usr/share/datasets/fashion-mnist; do
        [[ -f $d/train-images-idx3-ubyte.gz || -f $d/train-images-idx3-ubyte ]] && found=$d && break
    done
    if [[ -z $found ]]; then
        echo "bench_gpu.sh: no Fashion-MNIST in data/fashion_mnist/ nor a system copy; copy it" \
            "there first (see above) and carry data/fashion_mnist" >&2
        exit 2
    fi
    echo "== data: $found"
fi

# --- how each step's overrides change for a dry run ----------------------------------------
CPU_PRECISION=32-true
grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo 2>/dev/null && CPU_PRECISION=bf16-mixed
SHORT=(trainer.max_epochs=1 trainer.limit_train_batches=4 trainer.limit_val_batches=2
    trainer.limit_test_batches=2 callbacks.speed.warmup_steps=1)
QUIET=(data.download=false callbacks.progress_bar=null ++trainer.enable_progress_bar=false
    extras.print_config=false)

adapt() {  # prints the step's overrides, one a line, for this mode
    local o precision=""
    for o in "$@"; do
        if ((DRY)); then
            case $o in
                trainer=gpu) continue ;;
                trainer.precision=16-mixed) precision=32-true; continue ;;
                trainer.precision=bf16-mixed) precision=$CPU_PRECISION; continue ;;
                trainer.precision=*) precision=${o#*=}; continue ;;
            esac
        fi
        printf '%s\n' "$o"
    done
    # auto on a CPU: 32, or bf16-mixed with bf16 units; it also undoes an experiment's bf16-mixed
    ((DRY)) && printf '%s\n' trainer=cpu data.device=cpu "trainer.precision=${precision:-auto}"
    return 0
}

now() { date +%s.%N; }
STEP=0
TOTAL=10
RESERVE=20  # seconds kept for the report
MIN_STEP=20 # a step with less than this left is skipped, not started
run_step() {  # run_step NAME CAP_S DESCRIPTION -- COMMAND...
    local name=$1 cap=$2 desc=$3
    shift 4
    STEP=$((STEP + 1))
    if ((LIST)); then
        printf '%s\t%s\n' "$name" "$*"
        return 0
    fi
    local left=$((BUDGET - SECONDS - RESERVE))
    local limit=$((cap < left ? cap : left))
    local log=$DIR/$name.log rc t0 t1 secs
    if ((limit < MIN_STEP)); then
        echo "[$STEP/$TOTAL] $name: skipped (${left}s of the budget left)"
        printf '%s\tskipped\t0\t%s\t%s\n' "$name" "$desc" "$*" >>"$DIR/steps.tsv"
        return 0
    fi
    echo "[$STEP/$TOTAL] $name: $desc (limit ${limit}s)"
    echo "\$ $*" >"$log"
    t0=$(now)
    timeout --kill-after=15 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    t1=$(now)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    echo "[$STEP/$TOTAL] $name: exit $rc after ${secs}s$( ((rc)) && echo " - last lines:" )"
    ((rc)) && tail -n 5 "$log" | sed 's/^/    /'
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$secs" "$desc" "$*" >>"$DIR/steps.tsv"
    return 0
}

fit_step() {  # fit_step NAME CAP_S DESCRIPTION OVERRIDE...
    local name=$1 cap=$2 desc=$3 overrides
    shift 3
    mapfile -t overrides < <(adapt "$@" "${QUIET[@]}")
    ((DRY)) && overrides+=("${SHORT[@]}")
    run_step "$name" "$cap" "$desc" -- "$PYTHON" -m lightspeed "${overrides[@]}" "${EXTRA[@]}" \
        "hydra.run.dir=$DIR/$name"
}

# --- the steps -------------------------------------------------------------------------------
if ((DRY)); then
    BENCH_ARGS=(--steps 2 --warmup 1 --repeats 1 --startup "$STARTUP" --hooks)
else
    BENCH_ARGS=(--repeats 5 --startup "$STARTUP" --hooks)
fi
run_step tests 120 "tests/engine/test_gpu.py (make test-gpu)" -- \
    env LIGHTSPEED_TEST_GPU=1 "$PYTHON" -m pytest -q -p no:cacheprovider -m gpu -rfEs \
    tests/engine/test_gpu.py
mapfile -t bench_overrides < <(adapt trainer=gpu data.download=false)
run_step bench 150 "scripts/bench.py: template vs hand-written loop" -- \
    "$PYTHON" scripts/bench.py "${BENCH_ARGS[@]}" --out "$DIR/bench" -- \
    "${bench_overrides[@]}" "${EXTRA[@]}"
fit_step fit_default 90 "the default fit, trainer=gpu" trainer=gpu
fit_step fit_gpu_data 75 "data held on the GPU" data=fashion_mnist_gpu trainer=gpu
fit_step fp16 75 "GPU data, 16-mixed" data=fashion_mnist_gpu trainer=gpu trainer.precision=16-mixed
fit_step bf16 75 "GPU data, bf16-mixed" data=fashion_mnist_gpu trainer=gpu trainer.precision=bf16-mixed
fit_step fashion_gpu 90 "experiment=fashion_gpu" experiment=fashion_gpu
fit_step fashion_gpu_s1 60 "experiment=fashion_gpu, seed 1" experiment=fashion_gpu seed=1
fit_step fashion_gpu_s2 60 "experiment=fashion_gpu, seed 2" experiment=fashion_gpu seed=2
fit_step compile 150 "GPU data, perf.compile=true" data=fashion_mnist_gpu trainer=gpu perf.compile=true

# --- the report --------------------------------------------------------------------------------
((LIST)) && exit 0
REPORT_ARGS=(--dir "$DIR" --out "$REPORT_DIR")
((DRY)) && REPORT_ARGS+=(--dry-run)
"$PYTHON" scripts/bench_gpu_report.py "${REPORT_ARGS[@]}"
rc=$?
if [[ -n $COPY_TO ]]; then
    mkdir -p "$COPY_TO"
    cp "$REPORT_DIR"/bench_gpu.json "$REPORT_DIR"/bench_gpu.md "$COPY_TO"/ 2>/dev/null
    (cd "$DIR" && find . \( -name summary.json -o -name hardware.json -o -name config.yaml \
        -o -name '*.log' -o -name steps.tsv -o -name 'bench_*.json' -o -name 'bench_*.md' \) \
        -not -path '*/.hydra/*' -print0 | tar --null -czf "$COPY_TO/bench_gpu_runs.tar.gz" -T -)
    echo "== copied the report and bench_gpu_runs.tar.gz to $COPY_TO"
fi
echo "== done in ${SECONDS}s"
exit $rc
