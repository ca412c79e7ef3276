"""The share of each evaluation split's words by how often they occur in the training text, before (the books) and
after the modern sources came (sotu, ding). Run from the repository root: .venv/bin/python docs/results/rarewords/word_coverage.py"""
import json, sys
sys.path.insert(0,".")
from collections import Counter
import data, decode
d=json.load(open(data.DATA_DIR/"text"/"sentences.json"))
old=("austen","kjv","wordnet","fortunes")
def counts(srcs):
    return Counter(w for doc,s in d["train"].items() if doc.split("/")[0] in srcs for x in s for w in decode.normalize(x).split())
print("\n# coverage: share of words (%) seen 0 / 1-9 / 10-99 / 100+ times, in the books' text (old) and with the "
      "modern sources (new), all sentences of each split")
c_old=counts(old); c_new=counts(old+("sotu","ding"))
print("old text words", sum(c_old.values()), "new", sum(c_new.values()))
for split in ("test","modern"):
    words=[w for s in d[split].values() for x in s for w in decode.normalize(x).split()]
    for name,c in (("old",c_old),("new",c_new)):
        b=[sum(1 for w in words if lo<=c[w]<=hi)/len(words)*100 for lo,hi in ((0,0),(1,9),(10,99),(100,10**9))]
        print(split, name, " ".join(f"{x:5.1f}" for x in b), "% of words seen 0 / 1-9 / 10-99 / 100+ times")
