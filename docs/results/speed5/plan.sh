#!/usr/bin/env bash
# Issue #15 sitting (background, setsid; after setup stages 1-4): the `test` split alone, an untrained `default`
# checkpoint, then `decode.py --bench` of the current code and of the previous code (commit be1c1ee, from
# .device/prev/prev.tar) on the same checkpoint and clips, one after the other; then the GPU tests.
# CPU dry run: DEV='--device cpu' EXTRA='--repeats 1 --bench-batch 2 --limit 4' PRESET=tiny L=/tmp/p6 bash .device/bin/plan6.sh
# As run (2026-11-27, H200, commit 1c508f0): from the repository root as .device/bin/plan6.sh (so `cd ../..` below is the root).
# The previous-code bench failed inside it (.device/prev/prev.tar was not on the machine by then: "FAILED bench
# prev" in bench/progress.log) and was run again by hand on the same machine right after, with the same files:
#   L=$HOME/p6; mkdir -p $L/prev && tar -xf .device/prev/prev.tar -C $L/prev && ln -sfn "$(pwd)/data" $L/prev/data
#   cd $L/prev && python3 decode.py --ckpt $L/untrained.pt --bench --repeats 5 --out $L/prev-out   # bench-prev.log
# and then the current code once more with 10 repeats:
#   python3 decode.py --ckpt $L/untrained.pt --bench --repeats 10 --out $L/new10                   # bench-new10.log
# prev.tar = `git archive be1c1ee`. Run 3 and K=5 S=8 (bench-run3.log, bench-K5S8.log): plan7.sh, a fresh machine.
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
stamp "split done"
$PY -c "
import torch, whisfusion as W
torch.manual_seed(0)
W.save_model('$L/untrained.pt', W.build_model(W.WhisfusionConfig.from_dict(W.PRESETS['$PRESET'].to_dict())))
" > $L/ckpt.log 2>&1 || stamp "FAILED ckpt"
mkdir -p $L/prev && tar -xf .device/prev/prev.tar -C $L/prev && ln -sfn "$(pwd)/data" $L/prev/data
$PY decode.py --ckpt $L/untrained.pt --bench $EXTRA --out $L/new $DEV > $L/bench-new.log 2>&1 || stamp "FAILED bench new"
stamp "bench new done"
(cd $L/prev && $PY decode.py --ckpt $L/untrained.pt --bench $EXTRA --out $L/prev-out $DEV > $L/bench-prev.log 2>&1) || stamp "FAILED bench prev"
stamp "bench prev done"
[ -z "$DEV" ] && { $PY -m pytest -q tests/test_gpu.py > $L/test_gpu.log 2>&1 || stamp "FAILED test_gpu"; }
stamp "all done"; touch $L/ALL_DONE
