#!/usr/bin/env bash
# Issue #15: same transcripts and WER before/after? The trained CPU-demo model (checkpoints/cpu/stage2.pt of a
# fresh-clone make test) decoded on the GPU by the code the 23.14 % was measured with (16a376c) and by HEAD,
# graphed (default) and eager.
# As run (2026-11-27, H100, commit ea2fd23; from the repository root as .device/bin/wer16.sh, the checkpoint with its
# optimizer state dropped to fit the 64 MiB carry, the manifests and audio from the same clone):
#   OUT=$OUT/wer16 bash .device/bin/wer16.sh
# Only 8 files come back from the device per call: card.txt, compare.txt and six logs (prev16-graph-*.log and the
# CSVs did not); compare.txt has the transcript comparison of every pair, the graphed previous code included.
# CPU dry run: OUT=/tmp/w16 P=/tmp/prev16w PY=.venv/bin/python DEV='--device cpu' bash .device/bin/wer16.sh
set -u
cd "$(dirname "$0")/../.."
[ -f .device/bin/env.sh ] && source .device/bin/env.sh
W=$(pwd)/.device/wer; P=${P:-$HOME/prev16}; PY=${PY:-python3}; DEV=${DEV:-}; mkdir -p $OUT $P
tar -xf $W/prev16.tar -C $P
nvidia-smi --query-gpu=name --format=csv,noheader > $OUT/card.txt 2>&1
for split in test test-unseen-voice; do
  for code in head prev16; do
    dir=$( [ $code = head ] && pwd || echo $P )
    for mode in graph eager; do
      flag=$( [ $mode = eager ] && echo --no-cuda-graph || echo "" )
      (cd $dir && $PY decode.py --ckpt $W/stage2.pt --eval $W/numbers/$split.tsv $flag --out $OUT/$code-$mode $DEV) \
        > $OUT/$code-$mode-$split.log 2>&1 || echo "FAILED $code $mode $split" >> $OUT/failed.txt
    done
  done
done
$PY - $OUT > $OUT/compare.txt 2>&1 <<'PYEOF'
import csv, sys
from pathlib import Path
out = Path(sys.argv[1])
def hyps(d, split):
    return [r["whisfusion_hyp"] for r in csv.DictReader(open(out / d / f"{split}.csv"))]
for split in ["test", "test-unseen-voice"]:
    for a, b in [("head-graph", "prev16-graph"), ("head-eager", "prev16-eager"), ("head-graph", "head-eager")]:
        x, y = hyps(a, split), hyps(b, split)
        print(f"{split:18s} {a} vs {b}: {sum(p == q for p, q in zip(x, y))}/{len(x)} transcripts identical")
PYEOF
cat $OUT/compare.txt
