"""Where the long clips' errors are: word errors by position in the reference, for Whisfusion and Whisper-tiny.en
on the same utterances (transcripts saved by decode.py --out, Whisfusion's with its repeated words dropped, as
decode.py now writes them; transcripts written since then have theirs dropped already, so "raw" equals "dropped"
for them unless they were decoded with --keep-repeats). Run from the repository root; analysis.txt is
    .venv/bin/python docs/results/longclips/analyse.py docs/results/torchrun4/S4/test.csv \
        docs/results/recipe4/default/test-unseen-voice.csv+docs/results/torchrun4/S4/test-unseen-voice.csv \
        docs/results/torchrun4/S4/dev.csv docs/results/torchrun4/K5S8/test.csv
(the unseen voice: Whisper-tiny.en's transcripts from recipe4's CSV, Whisfusion's from torchrun4's, one model
throughout)
An argument may join the CSVs of one split with "+" (a run that decoded Whisper apart: K15S4/test.csv+whisper/test.csv):
their rows are matched by id, every id must be in the first file, and a later file's columns replace an earlier
file's of the same name."""
import csv
import sys
from collections import Counter

sys.path.insert(0, ".")
import decode


def load_rows(arg):
    """The rows of one CSV, or of several joined with "+" and matched by id (each adds its systems' columns)."""
    files = [list(csv.DictReader(open(p))) for p in arg.split("+")]
    by_id = {r["id"]: dict(r) for r in files[0]}
    for rows in files[1:]:
        for r in rows:
            by_id[r["id"]].update(r)
    return list(by_id.values())


def align(ref, hyp):
    """Levenshtein alignment: per reference word, 'ok' / 'sub' / 'del'; and per inserted word the index of the
    reference word it comes before (len(ref) for one after the last). Written out rather than jiwer's alignment
    because the tables in results.md were made with this one; jiwer breaks ties differently (about the same errors per
    bin, some substitutions counted as a deletion plus an insertion)."""
    n, m = len(ref), len(hyp)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]))
    i, j, tags, ins = n, m, [None] * n, []
    while i or j:
        if i and j and d[i][j] == d[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            tags[i - 1] = "ok" if ref[i - 1] == hyp[j - 1] else "sub"; i, j = i - 1, j - 1
        elif i and d[i][j] == d[i - 1][j] + 1:
            tags[i - 1] = "del"; i -= 1
        else:
            ins.append(i); j -= 1
    return tags, ins


def systems_of(rows):
    """The systems whose transcripts the rows hold (their `*_hyp` columns)."""
    return [c[:-4] for c in rows[0] if c.endswith("_hyp")]


def words_of(row, system):
    """A system's transcript of the row as normalised words, Whisfusion's with its repeats dropped (as decode.py
    writes it now)."""
    h = row[system + "_hyp"]
    return decode.normalize(decode.drop_repeats(h) if system == "whisfusion" else h).split()


BINS = [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50), (50, 60), (60, 10 ** 6)]  # word positions, the last open


def main(paths):
    rows_of = {path: load_rows(path) for path in paths}
    for path, rows in rows_of.items():
        systems = systems_of(rows)
        print(f"\n{path}: utterances with more than 40 reference words")
        print("word index  " + "".join(f"{s[:22]:>26s}" for s in systems) + "   (sub / del / ins per 100 reference words)")
        stats = {s: {b: Counter() for b in BINS} for s in systems}
        tails = {s: Counter() for s in systems}
        for r in rows:
            ref = decode.normalize(r["reference"]).split()
            if len(ref) <= 40:
                continue
            for s in systems:
                hyp, raw = words_of(r, s), decode.normalize(r[s + "_hyp"]).split()
                tags, ins = align(ref, hyp)
                for k, t in enumerate(tags):
                    b = next(b for b in BINS if b[0] <= k < b[1]); stats[s][b][t] += 1; stats[s][b]["n"] += 1
                for k in ins:
                    b = next((b for b in BINS if b[0] <= k < b[1]), BINS[-1]); stats[s][b]["ins"] += 1
                tails[s]["utts"] += 1
                tails[s]["short"] += len(hyp) < len(ref) - 3
                tails[s]["last5_deleted"] += sum(t == "del" for t in tags[-5:])
                tails[s]["rep"] += sum(a == b for a, b in zip(raw, raw[1:]))
                tails[s]["hypwords"] += len(hyp); tails[s]["refwords"] += len(ref); tails[s]["rawwords"] += len(raw)
        for b in BINS:
            cells = []
            for s in systems:
                c = stats[s][b]
                if c["n"]:
                    cells.append(f"{100*c['sub']/c['n']:6.1f} /{100*c['del']/c['n']:5.1f} /{100*c['ins']/c['n']:5.1f} (n={c['n']:4d})")
                else:
                    cells.append(" " * 26)
            print((f"{b[0]:3d}-{b[1] - 1:<3d}" if b[1] < 10 ** 6 else f"{b[0]:3d}+   ") + "     "
                  + "".join(f"{x:>26s}" for x in cells))
        for s in systems:
            t = tails[s]
            print(f"{s}: {t['utts']} utts, hyp/ref words {t['hypwords']}/{t['refwords']} ({t['rawwords']} before dropping), "
                  f"{t['short']} transcripts >3 words short, last 5 words deleted {t['last5_deleted']}, "
                  f"repeated words before dropping {t['rep']}")

    print("\nBy reference length: corpus WER % (raw -> repeated words dropped), repeated words per 100 transcript words")
    for path, rows in rows_of.items():
        systems = systems_of(rows)
        print(path)
        for lo, hi in ((0, 15), (16, 40), (41, 999)):
            sel = [r for r in rows if lo <= len(decode.normalize(r["reference"]).split()) <= hi]
            refs = [r["reference"] for r in sel]
            cells = []
            for s in systems:
                hyps = [r[s + "_hyp"] for r in sel]
                raw = decode.wer(refs, hyps)[0]
                dropped = decode.wer(refs, [decode.drop_repeats(h) if s == "whisfusion" else h for h in hyps])[0]
                cells.append(f"{s}: {raw:5.1f} -> {dropped:5.1f}, rep {decode.repeated_word_rate(hyps):4.1f}")
            print(f"  {lo:3d}-{hi:<3d} words ({len(sel):3d} utts)  " + " | ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1:])
