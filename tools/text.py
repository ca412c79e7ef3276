"""The text TinySpeech reads aloud: offline public-domain sources from Debian packages, normalised LibriSpeech
style, one document per book (or file), each document in exactly one split.

    austen    six Jane Austen novels (r-cran-janeaustenr, read with tools/rdata.py; Sense and Sensibility is
              left out: the real LibriVox clips read from it)
    kjv       the King James Bible, one document per book (bible-kjv)
    wordnet   WordNet's example sentences, one document per lexicographer file (wordnet-base)
    fortunes  fortune cookies, one document per file (fortunes, fortunes-min)
"""
import hashlib
import json
import re
import subprocess
from pathlib import Path

import data
from tools.rdata import read_r_rdb

AUSTEN_HELD_OUT = "sensesensibility"  # the real LibriVox clips are read from it: never in any training text
SPLIT_OF_DOC = {"austen/persuasion": "test", "austen/northangerabbey": "dev"}  # the rest: hashed in split_of
AUSTEN_R_DATA = "usr/lib/R/site-library/janeaustenr/data"  # where the r-cran-janeaustenr package keeps the novels
AUSTEN_SYSTEM_ROOT = Path("/")  # a system-wide install (apt-get install r-cran-janeaustenr) is used when present


def split_of(doc: str) -> str:
    """Splits are made by source document: 5 % dev, 5 % test of the documents of each source (Austen: one named
    novel each, six novels being too few to hash)."""
    if doc in SPLIT_OF_DOC:
        return SPLIT_OF_DOC[doc]
    if doc.startswith("austen/"):
        return "train"
    h = int(hashlib.md5(doc.encode()).hexdigest(), 16) % 100
    return "dev" if h < 5 else "test" if h < 10 else "train"


def split_sentences(paragraph: str) -> list[str]:
    """At . ! ? (and closing quotes) before a capital; the dot of Mr. Mrs. Dr. St. Messrs. ends no sentence."""
    paragraph = re.sub(r"\b(Mr|Mrs|Dr|St|Messrs)\.", r"\1", " ".join(paragraph.split()))
    return re.split(r"(?<=[.!?])[\"')]*\s+(?=[\"'(]*[A-Z])", paragraph)


def austen_package() -> Path:
    """The janeaustenr data folder: the system's, else the .deb unpacked under DATA_DIR/debs (installing the
    package would pull in all of R)."""
    pkg = AUSTEN_SYSTEM_ROOT / AUSTEN_R_DATA
    if (pkg / "Rdata.rdx").exists():
        return pkg
    deb_dir = data.DATA_DIR / "debs" / "janeaustenr"
    pkg = deb_dir / AUSTEN_R_DATA
    if not (pkg / "Rdata.rdx").exists():
        deb_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "r-cran-janeaustenr"], cwd=deb_dir, check=True, capture_output=True)
        subprocess.run(["dpkg-deb", "-x", str(next(deb_dir.glob("*.deb"))), str(deb_dir)], check=True)
    return pkg


def austen_docs() -> dict[str, list[str]]:
    pkg = austen_package()
    novels = read_r_rdb(pkg / "Rdata.rdx", pkg / "Rdata.rdb")
    docs = {}
    for name, lines in novels.items():
        if name == AUSTEN_HELD_OUT or not isinstance(lines, list):
            continue
        paragraphs = " ".join(line if line.strip() else "\n" for line in lines if line is not None).split("\n")
        docs[f"austen/{name}"] = [s for p in paragraphs if not re.match(r"\s*(CHAPTER|VOLUME)", p)
                                  for s in split_sentences(p)]
    return docs


def kjv_docs() -> dict[str, list[str]]:
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
    docs = {}
    for line in out.splitlines():
        m = re.match(r"(\w+?)(\d+):(\d+)\s+(.*)", line.strip())
        if m:
            docs.setdefault(f"kjv/{m.group(1)}", []).append(m.group(4))
    return docs


def wordnet_docs() -> dict[str, list[str]]:
    docs = {}
    for pos in ("noun", "verb", "adj", "adv"):
        for line in open(f"/usr/share/wordnet/data.{pos}", encoding="latin-1"):
            if line.startswith("  ") or "|" not in line:  # the licence header; a synset without a gloss
                continue
            lexfile = line.split()[1]  # the lexicographer file (noun.animal, verb.motion, ...) is the document
            for ex in re.findall(r'"([^"]+)"', line.split("|", 1)[1]):
                docs.setdefault(f"wordnet/{pos}.{lexfile}", []).append(ex)
    return docs


def fortune_docs() -> dict[str, list[str]]:
    """Prose cookies only: attribution lines ("\\t\\t-- ..." or "    -- ...") dropped, and a cookie with other
    characters (code, ASCII art, verse markup) left out."""
    docs = {}
    for f in sorted(Path("/usr/share/games/fortunes").glob("*")):
        if f.suffix or not f.is_file():  # the .dat indexes (and .u8 copies)
            continue
        for cookie in f.read_text(encoding="latin-1").split("\n%\n"):
            lines = [ln for ln in cookie.splitlines() if ln.strip() and not ln.startswith(("\t\t", "    --"))]
            if lines and all(re.fullmatch(r"[\w\s.,;:!?'\"()-]*", ln) for ln in lines):
                docs.setdefault(f"fortunes/{f.name}", []).append(" ".join(lines))
    return docs


SOURCES = {"austen": (austen_docs, "r-cran-janeaustenr (apt-get download)"), "kjv": (kjv_docs, "bible-kjv"),
           "wordnet": (wordnet_docs, "wordnet-base"), "fortunes": (fortune_docs, "fortunes fortunes-min")}


def ensure() -> dict[str, dict[str, list[str]]]:
    """data.build_text(), built from the Debian packages first when its cache is not there yet."""
    cache = data.DATA_DIR / "text" / "sentences.json"
    return data.build_text() if cache.exists() else build_text(cache)


def build_text(cache: Path, min_words=5, max_words=40) -> dict[str, dict[str, list[str]]]:
    """{split: {doc: [normalised sentences]}} from every source, written to `cache` (data.build_text reads it).
    5-40 words: shorter is hardly a sentence; 40 words are about 15 s read aloud, and longer utterances are made
    of consecutive sentences (tools/tinyspeech.plan_split)."""
    by_split = {"train": {}, "dev": {}, "test": {}}
    for name, (reader, apt_name) in SOURCES.items():
        try:
            docs = reader()
        except (OSError, subprocess.CalledProcessError) as e:
            raise data.DataError(f"text source '{name}' is missing ({e}). Install it: apt-get install {apt_name}, "
                                 f"or run `make setup`.") from e
        for doc, sents in docs.items():
            norm = [s for s in map(data.normalize_text, sents) if min_words <= len(s.split()) <= max_words]
            by_split[split_of(doc)][doc] = norm
    train = {s for sents in by_split["train"].values() for s in sents}
    for split in ("dev", "test"):  # a sentence that also stands in a training document leaves dev/test
        by_split[split] = {d: [s for s in sents if s not in train] for d, sents in by_split[split].items()}
    seen = set()  # and no sentence in both dev and test
    for split in ("dev", "test"):
        for d in by_split[split]:
            by_split[split][d] = [s for s in by_split[split][d] if not (s in seen or seen.add(s))]
    cache.parent.mkdir(parents=True, exist_ok=True)
    data.atomic_write_text(cache, json.dumps(by_split))
    return by_split
