#!/usr/bin/env bash
# Next sitting (background, setsid): issue #11's multi-GPU torchrun recipe = the current recipe G (2 + 7 + 7 min,
# --speed-perturb 0.9,1.1) with stages 1-2 under torchrun on every GPU of the machine, then all evals and the bench.
# CPU dry run: NGPU=2 DEV='--device cpu' P0='--preset tiny' SIZE=small WB=tiny.en T0=0.05 T1=0.1 T2=0.1 BATCH=8 ...
set -u
cd "$(dirname "$0")/../.."
[ -f .device/bin/env.sh ] && source .device/bin/env.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
NGPU=${NGPU:-$(nvidia-smi -L 2>/dev/null | wc -l)}
L=${L:-$HOME/lev5}; mkdir -p $L
PY=${PY:-python3}; SIZE=${SIZE:-default}; T0=${T0:-2}; T1=${T1:-7}; T2=${T2:-7}; BATCH=${BATCH:-256}
P0=${P0:-}; DEV=${DEV:-}; CK=checkpoints/lev5; LIMIT=${LIMIT:-400}; WB=${WB:-base}
COMMON="--size $SIZE --steps 100000 --batch-size $BATCH --speed-perturb 0.9,1.1 $DEV"
stamp() { echo "$(date +%T) $*" >> $L/progress.log; }
run() { local gpu=$1 name=$2; shift 2; local t=$(date +%s)
  CUDA_VISIBLE_DEVICES=$gpu $PY "$@" > $L/$name.log 2>&1 || stamp "FAILED $name"; stamp "end $name $(( $(date +%s) - t ))s"; }
stamp "start, $NGPU GPUs"
$PY -c "import data; data.build_text(); data.whisper_checkpoint('tiny.en'); data.whisper_checkpoint('$WB')" > $L/prep.log 2>&1 || stamp "FAILED prep"
( t=$(date +%s); $PY data.py --size $SIZE --weights tiny.en > $L/corpus.log 2>&1 || stamp "FAILED corpus"; stamp "corpus done $(( $(date +%s) - t ))s" ) &
run 0 s0 train.py --stage 0 --whisper $WB --out-dir $CK --time-limit $T0 --size $SIZE --steps 100000 --batch-size $BATCH $DEV $P0 &
wait
cache() { CUDA_VISIBLE_DEVICES=$1 $PY -c "
import sys, torch, data, train, whisfusion as W
dev = 'cuda' if torch.cuda.is_available() else 'cpu'
model, _ = W.load_model(sys.argv[1], dev)
speed = float(sys.argv[2])
utts = data.speed_perturbed(data.load_split('train', '$SIZE'), (speed,))
train.AudioBatches(model, [u for u in utts if u.speed == speed], 'train', dev)
if speed == 1: train.AudioBatches(model, data.load_split('dev', '$SIZE'), 'dev', dev)
" $CK/stage0.pt $2 > $L/cache-$2.log 2>&1 || stamp "FAILED cache $2"; stamp "cache $2"; }
cache 0 1 & cache $(( 1 % NGPU )) 0.9 & cache $(( 2 % NGPU )) 1.1 & wait
for stage in 1 2; do
  extra=""; [ $stage = 2 ] && extra="--lora-rank 0 --dropout 0.1 --time-masks 2"
  T=$T1; [ $stage = 2 ] && T=$T2
  t=$(date +%s)
  $PY -m torch.distributed.run --standalone --nproc_per_node $NGPU train.py --stage $stage --out-dir $CK \
    --time-limit $T $COMMON $extra > $L/s$stage.log 2>&1 || stamp "FAILED s$stage"
  stamp "end s$stage (torchrun x$NGPU) $(( $(date +%s) - t ))s"
done
cp $CK/stage*_log.csv $L/ 2>/dev/null
i=0
for split in test test-unseen-voice real dev; do
  lim=""; [ $split = dev ] && lim="--limit $LIMIT"
  base=""; [ $split = test ] && base="--baseline tiny.en base"
  OMP_NUM_THREADS=2 run $(( i % NGPU )) eval-$split decode.py --ckpt $CK/stage2.pt --size $SIZE --eval $split $lim $base --out $L/S4 $DEV &
  OMP_NUM_THREADS=2 run $(( (i + 1) % NGPU )) eval-$split-S8 decode.py --ckpt $CK/stage2.pt --size $SIZE --eval $split $lim -S 8 --out $L/S8 $DEV &
  [ $split != dev ] && OMP_NUM_THREADS=2 run $(( (i + 2) % NGPU )) eval-$split-K5S8 decode.py --ckpt $CK/stage2.pt --size $SIZE --eval $split -K 5 -S 8 --out $L/K5S8 $DEV &
  i=$(( i + 3 ))
done
# the previous decoding numerics (fp32 weights under autocast) on test: the bf16 default's WER change (#15)
D=cuda; [ -n "$DEV" ] && D=cpu
mkdir -p $L/S4-fp32
OMP_NUM_THREADS=2 run $(( (i + 1) % NGPU )) eval-test-fp32 -c "
import sys, torch, decode
m = decode.load_for_decoding('$CK/stage2.pt', '$D', torch.float32)
decode.evaluate(m, 'test', decode.DecodeOptions(), '$D', '$L/S4-fp32/test.csv', size='$SIZE', limit=${FP32LIMIT:-None})
" &
OMP_NUM_THREADS=2 run $(( i % NGPU )) ablate-dev decode.py --ckpt $CK/stage2.pt --size $SIZE --ablate dev --limit $LIMIT --out $L/ablate $DEV &
wait
stamp "evals done"
if [ -z "$DEV" ]; then
  run 0 bench decode.py --ckpt $CK/stage2.pt --size $SIZE --bench --repeats ${REPEATS:-5} --out $L/bench
  stamp "bench 1 done"
  run 0 bench-K5S8 decode.py --ckpt $CK/stage2.pt --size $SIZE --bench --repeats 3 -K 5 -S 8 --out $L/bench-K5S8
else
  run 0 bench decode.py --ckpt $CK/stage2.pt --size $SIZE --bench --repeats 1 --bench-batch 2 --limit 4 --out $L/bench $DEV
fi
stamp "all done"
touch $L/ALL_DONE
