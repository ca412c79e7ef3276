#!/usr/bin/env bash
# Issue #15: the `test` WER of a trained `default` model decoded with the compiled graphs (the default since commit
# 01ae741), the graphs without torch.compile (--no-compile) and no graphs (--no-cuda-graph), in one sitting of
# one GPU machine: a TinySpeech corpus built there (test, dev, test-unseen-voice, the first $NTRAIN of the 14,000
# train utterances: the full train split does not fit the sitting), then the current recipe's stages with shorter
# budgets ($T0 + $T1 + $T2 minutes; no speed perturbation), the GPU tests during stage 1, and the three decodings.
# Run in the background (setsid) from the repository root after the first four setup calls (text, TTS, tiny.en);
# it waits for $READY (Whisper-base's weights, the last setup call) before stage 0. poll.sh waits for it.
# GPUTESTS=0 leaves the GPU tests out; WER=0 the decodings (then bench.sh times the trained model).
# CPU dry run: DEV='--device cpu' SIZE=small NTRAIN=360 P0='--preset tiny' WB=tiny.en T0=0.3 T1=0.3 T2=0.3 BATCH=8 L=/tmp/s8 READY=/dev/null bash docs/results/speed8/plan.sh
set -u
cd "$(dirname "$0")/../../.."
[ -d $HOME/site ] && source .device/bin/env.sh  # the GPU machine (setup.sh installed there)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
L=${L:-$HOME/s8}; mkdir -p $L; PY=${PY:-python3}; SIZE=${SIZE:-default}; NTRAIN=${NTRAIN:-10000}
T0=${T0:-2}; T1=${T1:-4}; T2=${T2:-4}; BATCH=${BATCH:-256}; P0=${P0:-}; DEV=${DEV:-}; WB=${WB:-base}
READY=${READY:-$HOME/stage/BASE_READY}; CK=${CK:-checkpoints/s8}
COMMON="--size $SIZE --steps 100000 --batch-size $BATCH $DEV"
stamp() { echo "$(date +%T) $*" >> $L/progress.log; }
run() { local name=$1; shift; local t=$(date +%s)
  $PY "$@" > $L/$name.log 2>&1 || stamp "FAILED $name"; stamp "end $name $(( $(date +%s) - t ))s"; }
stamp "start $(git rev-parse --short HEAD 2>/dev/null) $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null) $(nproc --all) cores"
( t=$(date +%s); $PY - $SIZE $NTRAIN > $L/corpus.log 2>&1 <<'PYEOF' || stamp "FAILED corpus"
import sys, data
from tools import tinyspeech as ts
size, n_train = sys.argv[1], int(sys.argv[2])
plans = ts.plan_corpus(data.SIZES[size], 0)
voices = ts.available_voices()
print("voices:", sorted(v.name for v in voices))
for split in ("test", "dev", "test-unseen-voice", "train"):
    items = plans[split][:n_train] if split == "train" else plans[split]
    utts = ts.synth_split(split, items, voices, data.corpus_dir(size), size, 0, None)
    ts.write_manifest(utts, data.corpus_dir(size) / f"{split}.tsv")
    print(f"{split}: {len(utts)} utterances, {sum(u.seconds for u in utts) / 3600:.2f} h", flush=True)
PYEOF
  stamp "corpus done $(( $(date +%s) - t ))s" ) &
t0=$(date +%s); while [ ! -e $READY ] && [ $(( $(date +%s) - t0 )) -lt 600 ]; do sleep 2; done
run prep -c "import data; data.build_text(); print(data.whisper_checkpoint('tiny.en'), data.whisper_checkpoint('$WB'))"
run s0 train.py --stage 0 --whisper $WB --out-dir $CK --time-limit $T0 $COMMON $P0
wait  # the corpus
[ -n "$DEV" ] || [ "${GPUTESTS:-1}" = 0 ] || { $PY -m pytest -q tests/test_gpu.py > $L/test_gpu.log 2>&1 || stamp "FAILED test_gpu"; stamp "test_gpu done"; } &
run s1 train.py --stage 1 --out-dir $CK --time-limit $T1 --lr 1e-3 $COMMON
run s2 train.py --stage 2 --out-dir $CK --time-limit $T2 --lr 3e-4 --lora-rank 0 --dropout 0.1 --time-masks 2 $COMMON
cp $CK/stage*_log.csv $L/ 2>/dev/null
wait  # the GPU tests
[ "${WER:-1}" = 0 ] || {
# the three decodings of `test` at the same time (WER, not speed, is measured): each a fresh process, so the
# compiled one compiles (its time includes that); Whisper-tiny.en on the same audio in the uncompiled one
export OMP_NUM_THREADS=4
run wer-compiled-test decode.py --ckpt $CK/stage2.pt --size $SIZE --eval test --out $L/wer-compiled $DEV &
run wer-plain-test decode.py --ckpt $CK/stage2.pt --size $SIZE --eval test --no-compile --baseline tiny.en --out $L/wer-plain $DEV &
run wer-eager-test decode.py --ckpt $CK/stage2.pt --size $SIZE --eval test --no-cuda-graph --out $L/wer-eager $DEV &
wait
run wer-compiled-test-unseen-voice decode.py --ckpt $CK/stage2.pt --size $SIZE --eval test-unseen-voice --out $L/wer-compiled $DEV &
run wer-plain-test-unseen-voice decode.py --ckpt $CK/stage2.pt --size $SIZE --eval test-unseen-voice --no-compile --out $L/wer-plain $DEV &
wait
$PY - $L > $L/compare.txt 2>&1 <<'PYEOF'
import csv, os, sys
L = sys.argv[1]
for s in ["test", "test-unseen-voice"]:
    hyp = {}
    for v in ["compiled", "plain", "eager"]:
        if os.path.exists(f"{L}/wer-{v}/{s}.csv"):
            with open(f"{L}/wer-{v}/{s}.csv") as f:
                hyp[v] = [r["whisfusion_hyp"] for r in csv.DictReader(f)]
    pairs = [(a, b) for a in hyp for b in hyp if a < b]
    print(s, {v: len(h) for v, h in hyp.items()}, "utterances; identical transcripts:",
          ", ".join(f"{a} vs {b} {sum(x == y for x, y in zip(hyp[a], hyp[b]))}" for a, b in pairs))
PYEOF
cat $L/compare.txt >> $L/progress.log
}
stamp "all done"; touch $L/ALL_DONE
