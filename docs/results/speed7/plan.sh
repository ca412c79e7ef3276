#!/usr/bin/env bash
# Issue #15, torch.compile inside the CUDA graphs: prof18.py (compiled vs not, side by side, numbers and
# transcripts), the GPU tests, then `decode.py --bench` twice (rows: graph = compiled, the default; graph, not
# compiled = the previous default; same run, same Whisper-tiny.en). Untrained `default` checkpoint (Whisper-base's
# encoder shape); the `test` clips the bench reads (its first 64 and 5 per length bucket), synthesised on the CPU
# machine and carried (piper is not bit-reproducible: their lengths differ a little from the GPU-built split).
# Run in the background (setsid) from the repository root; poll.sh waits for it.
# CPU dry run: DEV='--device cpu' EXTRA='--repeats 1 --bench-batch 2 --limit 4' L=/tmp/p18run PROF=--cpu-small bash docs/results/speed7/plan.sh
set -u
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$HOME/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
L=${L:-$HOME/p18}; mkdir -p $L; PY=${PY:-python3}; DEV=${DEV:-}; EXTRA=${EXTRA:---repeats 10}; PROF=${PROF:-}
stamp() { echo "$(date +%T) $*" >> $L/progress.log; }
stamp "start $(git rev-parse --short HEAD 2>/dev/null) $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)"
$PY - $L > $L/ckpt.log 2>&1 <<'PYEOF' || stamp "FAILED ckpt"
import sys, torch, whisfusion as W
torch.manual_seed(0)
cfg = W.WhisfusionConfig.from_dict(W.PRESETS["default"].to_dict())  # Whisper-base's encoder shape
W.save_model(f"{sys.argv[1]}/untrained.pt", W.build_model(cfg))
print(cfg.encoder, cfg.decoder.n_layer, cfg.decoder.n_embd)
PYEOF
mkdir -p $L/prof18
[ -n "${SKIP_PROF:-}" ] || { $PY docs/results/speed7/prof18.py $L/prof18 $PROF > $L/prof18.log 2>&1 || stamp "FAILED prof18"; stamp "prof18 done"; }
[ -n "$DEV" ] || { $PY -m pytest -q tests/test_gpu.py > $L/test_gpu.log 2>&1 || stamp "FAILED test_gpu"; stamp "test_gpu done"; }
for b in ${BENCHES:-bench1 bench2}; do
  $PY decode.py --ckpt $L/untrained.pt --bench $EXTRA --out $L/$b $DEV > $L/$b.log 2>&1 || stamp "FAILED $b"
  stamp "$b done"
done
stamp "all done"; touch $L/ALL_DONE
