# Sourced by the run plans (recipe6, wide1) once they have set L, their log folder. It moves to the
# repository root, takes the GPU machine's environment where setup.sh installed one, and gives the plans
#   stamp TEXT            a timed line in $L/progress.log
#   run NAME ARGS...      $PY ARGS > $L/NAME.log, its end (and any failure) stamped
#   corpus SIZE           python data.py --size SIZE > $L/corpus.log, stamped when done (run it with &)
# after stamping the start (commit, card, GPUs, cores) and running `prep`: the text and both Whisper encoders,
# which every stage and baseline reads. X, X0, X12, XD are the CPU dry run's extra flags (all stages, stage 0,
# stages 1-2, decoding); none on the GPU.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [ -d $HOME/site ]; then source .device/bin/env.sh || exit 1; fi
mkdir -p $L; PY=${PY:-python3}; X=${X:-}; X0=${X0:-}; X12=${X12:-}; XD=${XD:-}
stamp() { echo "$(date +%T) $*" >> $L/progress.log; }
run() { local name=$1; shift; local t=$(date +%s)
  $PY "$@" > $L/$name.log 2>&1 || stamp "FAILED $name"; stamp "end $name $(( $(date +%s) - t ))s"; }
corpus() { local t=$(date +%s)
  $PY data.py --size $1 > $L/corpus.log 2>&1 || stamp "FAILED corpus"; stamp "corpus done $(( $(date +%s) - t ))s"; }
stamp "start $(git log --oneline -1 | cut -c1-7) $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)" \
  "x$(nvidia-smi -L 2>/dev/null | wc -l) $(nproc --all) cores"
run prep -c "from tools import text, weights; text.ensure(); print(weights.ensure('tiny.en'), weights.ensure('base'))"
