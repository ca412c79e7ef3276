"""How many of the evaluation splits' words the training speech says 0, 1-9 and 10+ times, for the `default` and
`wide` plans and for a `wide` whose extra 16,000 sentences are chosen for coverage instead of drawn (each training
sentence outside the default's plan, in a fixed shuffled order, taken while it has a word heard fewer than 10 or 3
times). "est. wrong" weights the three shares by the rate at which torchrun4's model gets such words wrong on
`test` (97.4 / 62.4 / 10.0 %, spoken.txt's bins merged): a forecast, not a measurement. No audio is made; the plans
come from the current code. Run from the repository root (heard.txt is this):
    .venv/bin/python docs/results/rarewords/heard.py"""
import random
import sys
from collections import Counter

sys.path.insert(0, ".")
import data
import decode
from tools import tinyspeech
from tools.text import ensure

BINS, RATES = [(0, 0), (1, 9), (10, 10 ** 9)], (0.974, 0.624, 0.100)


def words(sentences):
    return [w for s in sentences for w in decode.normalize(s).split()]


def report(name, heard, plan):
    print(f"{name}: {sum(heard.values()):,} spoken words, {len(heard):,} distinct")
    for split in ("dev", "test", "modern"):
        ws = words(it["text"] for it in plan[split])
        shares = [100 * sum(lo <= heard[w] <= hi for w in ws) / len(ws) for lo, hi in BINS]
        print(f"  {split:7s} heard 0 / 1-9 / 10+ times: " + " / ".join(f"{x:4.1f}" for x in shares)
              + f" %   est. wrong {sum(x * r for x, r in zip(shares, RATES)):.1f} %")


# `wide` is the default size since 2026-12-06; the default before it is the same plan without its `fast` sentences
specs = {"default": dict(data.SIZES["default"], fast=0), "wide": data.SIZES["default"]}
plans = {size: tinyspeech.plan_corpus(spec, 0) for size, spec in specs.items()}
for size, plan in plans.items():
    report(f"{size} ({len(plan['train']):,} sentences, drawn)", Counter(words(it["text"] for it in plan["train"])), plan)
base = Counter(words(it["text"] for it in plans["default"]["train"]))
used = {it["text"] for it in plans["default"]["train"]}
candidates = [s for sents in ensure()["train"].values() for s in sents if s not in used]
random.Random(0).shuffle(candidates)
for threshold in (10, 3):
    heard, n = Counter(base), 0
    for s in candidates:
        ws = decode.normalize(s).split()
        if any(heard[w] < threshold for w in ws):
            heard.update(ws)
            n += 1
            if n == 16000:
                break
    report(f"default + 16,000 chosen for coverage (a word heard < {threshold} times)", heard, plans["default"])
