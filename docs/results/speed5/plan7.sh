#!/usr/bin/env bash
# K=5, S=8 against the default K=15, S=4 on the current code (after setup stages 1-4): the `test` split alone, an
# untrained `default` checkpoint, then `decode.py --bench` at the defaults and at -K 5 -S 8, one after the other.
# CPU dry run: DEV='--device cpu' EXTRA='--repeats 1 --bench-batch 2 --limit 4' PRESET=tiny L=/tmp/p7 bash .device/bin/plan7.sh
# As run (2026-11-27, H200, commit 0440999): from the repository root as .device/bin/plan7.sh.
set -u
cd "$(dirname "$0")/../.."
[ -f .device/bin/env.sh ] && source .device/bin/env.sh
L=${L:-$HOME/p6}; mkdir -p $L; PY=${PY:-python3}; DEV=${DEV:-}; EXTRA=${EXTRA:---repeats 5}; PRESET=${PRESET:-default}
stamp() { echo "$(date +%T) $*" >> $L/progress.log; }
stamp start
$PY - > $L/split.log 2>&1 <<'PYEOF' || stamp "FAILED split"
import time, data
from tools import tinyspeech as T
t = time.time()
root = data.corpus_dir("default"); root.mkdir(parents=True, exist_ok=True)
plans = T.plan_corpus(data.SIZES["default"], 0)
utts = T.synth_split("test", plans["test"], T.available_voices(), root, "default", 0, None)
T.write_manifest(utts, root / "test.tsv")
data.whisper_checkpoint("tiny.en")
print(f"test: {len(utts)} utterances, {sum(u.seconds for u in utts):.0f} s, built in {time.time() - t:.0f} s")
PYEOF
$PY -c "
import torch, whisfusion as W
torch.manual_seed(0)
W.save_model('$L/untrained.pt', W.build_model(W.WhisfusionConfig.from_dict(W.PRESETS['$PRESET'].to_dict())))
" > $L/ckpt.log 2>&1 || stamp "FAILED ckpt"
stamp "split, ckpt done"
$PY decode.py --ckpt $L/untrained.pt --bench $EXTRA --out $L/K15S4 $DEV > $L/bench-K15S4.log 2>&1 || stamp "FAILED K15S4"
stamp "bench K15S4 done"
$PY decode.py --ckpt $L/untrained.pt --bench $EXTRA -K 5 -S 8 --out $L/K5S8 $DEV > $L/bench-K5S8.log 2>&1 || stamp "FAILED K5S8"
[ -z "$DEV" ] && { $PY -m pytest -q tests/test_gpu.py > $L/test_gpu.log 2>&1 || stamp "FAILED test_gpu"; }
stamp "all done"; touch $L/ALL_DONE
