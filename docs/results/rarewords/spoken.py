"""Is a word wrong because the training *text* (stage 0) rarely has it, or because the training *speech* (stages
1-2: the sentences the corpus speaks) rarely has it? Each reference word of a decoding CSV is counted right or wrong
(aligned as in analyse.py, Whisfusion's repeats dropped) and binned twice: by its occurrences in the books' training
text, and by its occurrences in the training split's spoken sentences. The spoken sentences are those of the corpus
the model was trained on, planned again from the code of that commit (the plan is deterministic in its seed), e.g.
for torchrun4's model (commit 16a376c):
    git worktree add /tmp/w16 16a376c && cd /tmp/w16 && WHISFUSION_DATA=/tmp/d16 python -c "import json, data; \
      from tools import tinyspeech; p = tinyspeech.plan_corpus(data.SIZES['default'], 0); \
      json.dump({k: [it['text'] for it in v] for k, v in p.items()}, open('/tmp/plan16.json', 'w'))"
then, from the repository root (spoken.txt is this):
    .venv/bin/python docs/results/rarewords/spoken.py /tmp/plan16.json /tmp/d16/text/sentences.json \
        docs/results/torchrun4/S4/test.csv docs/results/torchrun4/S4/dev.csv"""
import json
import sys
from collections import Counter

sys.path.insert(0, ".")
sys.path.insert(0, "docs/results/longclips")
import decode
from analyse import align, load_rows, systems_of, words_of  # noqa: E402 (the long-clip script's helpers)

TEXT_BINS = [(0, 9), (10, 99), (100, 10 ** 9)]
SPOKEN_BINS = [(0, 0), (1, 9), (10, 10 ** 9)]


def label(b):
    return f"{b[0]}" if b[0] == b[1] else f"{b[0]}-{b[1]}" if b[1] < 10 ** 9 else f"{b[0]}+"


plan_path, text_path, *csvs = sys.argv[1:]
plan, text = json.load(open(plan_path)), json.load(open(text_path))
spoken = Counter(w for s in plan["train"] for w in decode.normalize(s).split())
written = Counter(w for sents in text["train"].values() for s in sents for w in decode.normalize(s).split())
print(f"training text: {sum(written.values()):,} words; training speech: {len(plan['train']):,} utterances, "
      f"{sum(spoken.values()):,} words, {len(spoken):,} distinct")
for path in csvs:
    rows = load_rows(path)
    systems = systems_of(rows)
    stats = Counter()  # (system, text bin, spoken bin) -> wrong; (None, ...) -> words
    for r in rows:
        ref = decode.normalize(r["reference"]).split()
        for s in systems:
            for w, t in zip(ref, align(ref, words_of(r, s))[0]):
                key = (next(b for b in TEXT_BINS if b[0] <= written[w] <= b[1]),
                       next(b for b in SPOKEN_BINS if b[0] <= spoken[w] <= b[1]))
                stats[(s,) + key] += t != "ok"
                if s == systems[0]:
                    stats[(None,) + key] += 1
    n_all = sum(v for k, v in stats.items() if k[0] is None)
    print(f"\n{path}: % of the reference words wrong, by occurrences in the training text and in the training speech")
    print(f"{'text':>9s} {'speech':>7s} {'words':>7s}" + "".join(f"{s:>17s}" for s in systems))
    for tb in TEXT_BINS:
        for sb in SPOKEN_BINS:
            n = stats[(None, tb, sb)]
            if n:
                print(f"{label(tb):>9s} {label(sb):>7s} {100 * n / n_all:6.1f}%"
                      + "".join(f"{100 * stats[(s, tb, sb)] / n:16.1f}%" for s in systems))
    for s in systems:
        wrong = sum(v for k, v in stats.items() if k[0] == s)
        unheard = sum(v for k, v in stats.items() if k[0] == s and k[2][1] < 10)
        print(f"{s}: {wrong} words wrong, {unheard} ({100 * unheard / wrong:.0f} %) of them spoken fewer than 10 "
              f"times in training")
