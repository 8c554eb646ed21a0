#!/usr/bin/env bash
# The GPU checks of issues 2, 4 and 5 in one call, for a lent GPU machine with a short lease.
#
#   ET_DATA=/path/to/data OUT=/tmp/out bash benchmarks/gpu_suite.sh [cuda|cpu] [full|tiny] [PARTS]
#
# PARTS is any of "tests edges core graph anomaly select" (default: "tests edges core anomaly";
# the graph part has no cell left to fill, see below). "tests" comes first: tests/test_devices.py
# checks the device's results against the CPU's (the CSR kernel's sparse products, autocast, the
# trainer); "edges" times that kernel. "select" runs the anomaly configurations of $SELECT_GRID
# side by side on the device, each with the flags $SELECT, and selects among them on validation
# (bench_anomaly.py --select). Each part runs under its own time
# limit and writes its table under $OUT as it finishes, so a part that runs out of time loses
# only itself. "tiny" checks the script itself on a CPU.
#
# The graph part runs ET only: GIN and the MLP are cheap enough for a CPU, so they run there with
# the same flags (bench_graph.py --models gin mlp --device cpu) and the outs are collected into
# one table with --collect. It can keep the machine's 16 CPU cores busy too: one bench_graph.py
# on the GPU ($GRAPH_GPU) and, when $GRAPH_CPU is set, one on the host's cores run side by side
# into one out folder, which comes back as graph.tgz with every fold's checkpoints, so folds cut
# off by the lease resume on any machine (untar, then the same command with the same --out).
set -u
DEVICE=${1:-cuda}
SCALE=${2:-full}
PARTS=${3:-tests edges core anomaly}
OUT=${OUT:-runs/gpu_suite}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$SCALE" = full ]; then
    CORE="--preset image --batch 64 --repeats 5"
    # Measured on an H100, 2026-11-26 (`cpu` preset with max_degree=32, batch 32, 300 epochs):
    # small graphs leave the GPU launch-bound, so each of 6 processes sharing it ran an
    # IMDB-BINARY epoch in 1.15 s (a sandbox CPU core: 1.8 s), and 10 PROTEINS folds on the
    # host's cores beside them ran at 5.4 s an epoch (a sandbox core: ~2.5 s). With a 15-minute
    # lease, use the archive to finish cut-off folds elsewhere (RESUME, or the same command).
    # Every 300-epoch cell of RESULTS.md is done (on the sandbox CPU), so the graph part runs
    # only when named. By default it repeats ET's DD cell on the GPU, a cross-check of the CPU's;
    # GRAPH, GRAPH_GPU and GRAPH_CPU set another run. Several leases: pass graph.tgz as RESUME.
    GRAPH=${GRAPH:-"--preset cpu --epochs 300 --models et --dd-max-nodes 100"}
    GRAPH_GPU=${GRAPH_GPU:-"--datasets DD --jobs ${GPU_JOBS:-6}"}
    GRAPH_CPU=${GRAPH_CPU:-}
    GAD="--datasets tolokers --seeds 5 --epochs 100 --threads 8"
    EDGES="--repeats 5"
    SELECT=${SELECT:-"--datasets tolokers --models et,mlp,gcn,sage,bwgnn --first-seed 10 --seeds 5 --epochs 200 --et-learn-beta --et-steps 4 --threads 3"}
    T_TESTS=120 T_EDGES=120 T_CORE=90 T_GRAPH=${T_GRAPH:-500} T_GAD=150 T_SELECT=${T_SELECT:-300}
else
    CORE="--preset small --batch 2 --repeats 1 --steps 2"
    GRAPH="--preset cpu --epochs 2 --models et --folds 2"
    GRAPH_GPU="--datasets MUTAG --jobs 2"
    GRAPH_CPU="--datasets ENZYMES --jobs 2 --max-folds 1"
    GAD="--datasets tolokers --seeds 1 --epochs 1 --models mlp,et --threads 1"
    EDGES="--cases random --nodes 300 --edges 1500 --repeats 1"
    SELECT=${SELECT:-"--datasets tolokers --models et,mlp --seeds 1 --epochs 1 --threads 1"}
    T_TESTS=120 T_EDGES=60 T_CORE=60 T_GRAPH=120 T_GAD=120 T_SELECT=120
fi

{ nvidia-smi -L 2>/dev/null; $PY -c "import torch, torch_geometric as g; print('torch', torch.__version__, 'pyg', g.__version__, 'cuda', torch.cuda.is_available())"; } | tee "$OUT/env.txt"

has() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# Every part runs whatever happened to the others; the exit status says whether all succeeded
# (a part stopped by its time limit counts as failed: timeout exits 124).
status=0
failed() { echo "gpu_suite: $1 failed (exit $2)" >&2; status=1; }

if has tests; then
    timeout "$T_TESTS" $PY -m pytest -q -p no:cacheprovider tests/test_devices.py > "$OUT/tests.txt" 2>&1 \
        || failed tests $?
    tail -n 3 "$OUT/tests.txt"
fi

if has edges; then
    # shellcheck disable=SC2086
    timeout "$T_EDGES" $PY benchmarks/bench_edges.py --device "$DEVICE" $EDGES \
        > "$OUT/edges.md" 2>&1 || failed edges $?
    tail -n 8 "$OUT/edges.md"
fi

has core && for dtype in float32 bfloat16; do
    # shellcheck disable=SC2086
    timeout "$T_CORE" $PY benchmarks/bench_core.py --device "$DEVICE" --dtype "$dtype" $CORE \
        > "$OUT/core_$dtype.md" 2>&1 || failed "core $dtype" $?
    tail -n 4 "$OUT/core_$dtype.md"
done

if has graph; then
    # RESUME=path/to/graph.tgz (from an earlier call) continues that run: finished folds are read
    # back, cut-off ones resume from their last checkpoint, the rest start.
    [ -n "${RESUME:-}" ] && { tar xzf "$RESUME" -C "$OUT" || failed "graph resume" $?; }
    B=("$PY" benchmarks/bench_graph.py --out "$OUT/graph")
    # timeout makes each run a process group of its own: its pid names the group.
    # shellcheck disable=SC2086
    timeout -k 5 "$T_GRAPH" "${B[@]}" $GRAPH --device "$DEVICE" $GRAPH_GPU \
        > "$OUT/graph_gpu_log.txt" 2>&1 &
    groups=$!
    if [ -n "$GRAPH_CPU" ]; then
        # shellcheck disable=SC2086
        timeout -k 5 "$T_GRAPH" "${B[@]}" $GRAPH --device cpu --threads 1 $GRAPH_CPU \
            > "$OUT/graph_cpu_log.txt" 2>&1 &
        groups="$groups $!"
    fi
    for pid in $groups; do wait "$pid" || failed "graph run $pid" $?; done
    # Fold workers outlive a parent killed by timeout; only this script's groups are killed.
    for pid in $groups; do pkill -9 -g "$pid" 2>/dev/null; done
    sleep 1
    "$PY" benchmarks/bench_graph.py --collect "$OUT/graph" --out "$OUT/graph_table" \
        --budget "$GRAPH, GPU: $GRAPH_GPU; host CPU: $GRAPH_CPU" > "$OUT/graph.md" 2>&1 \
        || failed "graph table" $?
    # The device returns only files at most two folders down: the whole out folder travels as
    # one archive (weights, optimizer and RNG state of every fold, finished or not); the folder
    # is removed only once the archive holds it.
    tar czf "$OUT/graph.tgz" --exclude tensorboard -C "$OUT" graph && rm -rf "$OUT/graph" \
        || failed "graph archive" $?
    tail -n 8 "$OUT/graph.md"
fi

if has anomaly; then
    # shellcheck disable=SC2086
    timeout "$T_GAD" $PY benchmarks/bench_anomaly.py --device "$DEVICE" $GAD \
        --machine "$(head -n 1 "$OUT/env.txt")" --out "$OUT/anomaly.md" \
        > "$OUT/anomaly_log.txt" 2>&1 || failed anomaly $?
    tail -n 5 "$OUT/anomaly_log.txt"
fi
if has select; then
    # NAME:FLAGS entries, each run as its own process on the one device; every model is
    # selected among the entries that ran it, per seed, on validation.
    GRID=${SELECT_GRID:-"h64:--hidden 64;h128:--hidden 128;h64hop2:--hidden 64 --input-hops 2;h128hop2:--hidden 128 --input-hops 2"}
    mkdir -p "$OUT/select"
    pairs=() pids=()
    IFS=';' read -ra entries <<< "$GRID"
    for entry in "${entries[@]}"; do
        name=${entry%%:*}
        # shellcheck disable=SC2086
        timeout "$T_SELECT" $PY benchmarks/bench_anomaly.py --device "$DEVICE" --no-reference \
            $SELECT ${entry#*:} --machine "$(head -n 1 "$OUT/env.txt")" \
            --out "$OUT/select/$name.md" > "$OUT/select/${name}_log.txt" 2>&1 &
        pids+=($!) pairs+=("$name=$OUT/select/${name}_log.txt")
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed "select run $pid" $?; done
    $PY benchmarks/bench_anomaly.py --select "${pairs[@]}" --out "$OUT/select/select.md" \
        > /dev/null 2> "$OUT/select/select_err.txt" || failed "select table" $?
    head -n 12 "$OUT/select/select.md" 2>/dev/null
fi
exit "$status"
