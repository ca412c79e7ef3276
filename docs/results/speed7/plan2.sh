#!/usr/bin/env bash
# Issue #15, second sitting: the WER of a trained model decoded with and without torch.compile, then
# `decode.py --bench` once more (the untrained `default` checkpoint, as plan.sh). The WER part: the CPU demo's model (`make cpu-model`,
# trained on the CPU machine and carried, with the `numbers` test splits) on test and test-unseen-voice, three ways:
# graphs recorded from compiled passes (the default), graphs without torch.compile (--no-compile), no graphs
# (--no-cuda-graph); each a fresh process, so the first one's time includes compiling.
# Run in the background (setsid) from the repository root; it waits for $C/READY (the carried model) first. CPU dry run: DEV='--device cpu' EXTRA='--repeats 1 --bench-batch 2 --limit 4' L=/tmp/p19 C=checkpoints/cpu bash docs/results/speed7/plan2.sh
set -u
cd "$(dirname "$0")/../../.."
export PYTHONPATH=$HOME/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
L=${L:-$HOME/p19}; C=${C:-$HOME/p3}; mkdir -p $L; PY=${PY:-python3}; DEV=${DEV:-}; EXTRA=${EXTRA:---repeats 10}
stamp() { echo "$(date +%T) $*" >> $L/progress.log; }
stamp "start $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)"
$PY - $L > $L/ckpt.log 2>&1 <<'PYEOF' || stamp "FAILED ckpt"
import sys, torch, whisfusion as W
torch.manual_seed(0)
cfg = W.WhisfusionConfig.from_dict(W.PRESETS["default"].to_dict())  # Whisper-base's encoder shape
W.save_model(f"{sys.argv[1]}/untrained.pt", W.build_model(cfg))
PYEOF
t0=$(date +%s); while [ ! -f $C/READY ] && [ $(( $(date +%s) - t0 )) -lt 300 ]; do sleep 2; done
for s in test test-unseen-voice; do
  for v in compiled:"" plain:--no-compile eager:--no-cuda-graph; do
    name=${v%%:*}; flag=${v#*:}; t=$(date +%s)
    $PY decode.py --ckpt $C/stage2.pt --size numbers --eval $s $flag --out $L/wer-$name $DEV > $L/wer-$name-$s.log 2>&1 || stamp "FAILED wer $name $s"
    stamp "wer $name $s done in $(( $(date +%s) - t )) s"
  done
done
$PY - $L > $L/compare.txt 2>&1 <<'PYEOF'
import csv, sys
L = sys.argv[1]
for s in ["test", "test-unseen-voice"]:
    hyp = {}
    for v in ["compiled", "plain", "eager"]:
        with open(f"{L}/wer-{v}/{s}.csv") as f:
            hyp[v] = [r["whisfusion_hyp"] for r in csv.DictReader(f)]
    n = len(hyp["plain"])
    print(s, n, "utterances; identical transcripts: compiled vs plain", sum(a == b for a, b in zip(hyp["compiled"], hyp["plain"])),
          "| plain vs eager", sum(a == b for a, b in zip(hyp["plain"], hyp["eager"])),
          "| compiled vs eager", sum(a == b for a, b in zip(hyp["compiled"], hyp["eager"])))
PYEOF
cat $L/compare.txt >> $L/progress.log; touch $L/WER_DONE
[ -n "${SKIP_BENCH:-}" ] || { $PY decode.py --ckpt $L/untrained.pt --bench $EXTRA --out $L/bench3 $DEV > $L/bench3.log 2>&1 || stamp "FAILED bench3"; stamp "bench3 done"; }
stamp "all done"; touch $L/ALL_DONE
