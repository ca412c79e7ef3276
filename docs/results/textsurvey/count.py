"""Shared counter. Input: paragraphs (one per line on stdin, or from a python generator).
Splits into sentences with the project's rule (tools/text.py split_sentences), then counts
'clean' sentences: 5-40 words, starts with a capital/quote, ends with . ! ? (optionally a closing quote),
only letters/digits/basic punctuation (no URLs, code symbols, markup)."""
import re, sys, collections

def split_sentences(paragraph):
    paragraph = re.sub(r"\b(Mr|Mrs|Dr|St|Messrs)\.", r"\1", " ".join(paragraph.split()))
    return re.split(r"(?<=[.!?])[\"')]*\s+(?=[\"'(]*[A-Z])", paragraph)

CLEAN = re.compile(r"[\"'(]*[A-Z][A-Za-z0-9\s.,;:!?'\"()\-]*[.!?][\"')]*")

TR = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2014": " - ", "\u2013": " - ", "\u00a0": " "})

def stats(paragraphs, name="", show=8, seed=1):
    n_all = 0; kept = []
    for p in paragraphs:
        p = p.translate(TR)
        for s in split_sentences(p):
            s = s.strip()
            if not s: continue
            n_all += 1
            w = len(s.split())
            if 5 <= w <= 40 and CLEAN.fullmatch(s) and not re.search(r"[A-Za-z]\.[A-Za-z]", s):
                kept.append(s)
    uniq = list(dict.fromkeys(kept))
    words = sum(len(s.split()) for s in uniq)
    print(f"{name}: sentence-like segments={n_all} clean 5-40w={len(kept)} unique={len(uniq)} words(unique)={words}")
    import random
    r = random.Random(seed)
    for s in r.sample(uniq, min(show, len(uniq))):
        print("   |", s[:200])
    return uniq

if __name__ == "__main__":
    stats((l for l in sys.stdin), sys.argv[1] if len(sys.argv) > 1 else "stdin")
