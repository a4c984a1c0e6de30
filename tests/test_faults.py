"""Bad input and injected faults through the real command line.

Every case must end with a non-zero exit, exactly one `error:` line, no traceback, and the data and run
directories as they were (file names, sizes and mtimes), or, where training had started, resumable.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
import torch
from typer.testing import CliRunner

from sentiment import runs as checkpoint_mod
from sentiment.runs import BEST, LAST, load_checkpoint, read_metrics
from sentiment.cli import app
from conftest import TINY_TRAINING, one_line_error, poison_gradient, poison_loss, set_args

runner = CliRunner()
STEPS_PER_EPOCH = 5  # 40 reviews a class, 10% kept for validation: 72 in batches of 16
TINY = set_args(["train.epochs=2", *TINY_TRAINING])
FAST = TINY + ["--set", "run.checkpoint_minutes=0"]  # last.pt after every step


def run(*args, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], input=input)
    return result.exit_code, result.output  # stdout and stderr together


def snapshot(*roots: Path) -> dict[str, object]:
    """Every path under roots: (size, mtime) of files, the target of links, 'dir' for directories."""
    out: dict[str, object] = {}
    for root in roots:
        if not root.exists():
            out[str(root)] = "missing"
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath, name)
                if p.is_symlink():
                    out[str(p)] = ("link", os.readlink(p))
                elif p.is_dir():
                    out[str(p)] = "dir"
                else:
                    st = p.stat()
                    out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def timing_free(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "tokens_per_s", "valid_seconds")} for r in rows]


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    """A tiny dataset (its caches filled) and a finished two-epoch run trained on it."""
    from conftest import make_imdb

    base = tmp_path_factory.mktemp("faults")
    data = make_imdb(base / "data", n_per_class=40)
    runs = base / "runs"
    code, text = run("train", "--set", f"data.data_dir={data}", *FAST, "--run-dir", runs / "run")
    assert code == 0, text
    return SimpleNamespace(base=base, data=data, runs=runs, run=runs / "run")


# ---------------------------------------------------------------- helpers that set up one case
def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def dl_dir(tmp: Path) -> Path:
    """An existing, empty data directory to download into."""
    (tmp / "dl").mkdir(exist_ok=True)
    return tmp / "dl"


def copy_run(w: SimpleNamespace, tmp: Path) -> Path:
    return Path(shutil.copytree(w.run, tmp / "run"))


def repeated_texts_csv(tmp: Path) -> Path:
    """20 rows a class, each text 4 times: a 10% carve asks 2 rows a class, and a text's 4 copies never fit."""
    rows = ["text,label"] + [f"{word} film {i},{label}" for i in range(5)
                             for word, label in (("great", "pos"), ("awful", "neg"))] * 4
    return write(tmp / "repeated.csv", "\n".join(rows) + "\n")


def trained_elsewhere(w: SimpleNamespace, tmp: Path) -> Path:
    """A copy of the run whose config gives its data directory relative to where it was trained (w.base's parent:
    faultsN/data, which the tests' working directory has not)."""
    run_dir = copy_run(w, tmp)
    edit_config(run_dir, f"data_dir: {w.data}", f"data_dir: {w.data.relative_to(w.base.parent)}")
    (run_dir / "run.json").write_text(json.dumps({"format_version": 1, "working_directory": str(w.base.parent)}))
    return run_dir


def symlink_to(target: Path) -> Path:
    link = target.with_name(target.name + "-link")
    link.symlink_to(target, target_is_directory=True)
    return link


def small_data(tmp: Path) -> Path:
    from conftest import make_imdb

    return make_imdb(tmp / "data", n_per_class=3)


def imdb_archive(tmp: Path, extra: list[tuple[tarfile.TarInfo, bytes | None]] = ()) -> Path:
    """A gzipped tar of a small aclImdb (plus extra members), like aclImdb_v1.tar.gz."""
    import io

    src = small_data(tmp / "src")
    path = tmp / "aclImdb_v1.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src / "aclImdb", arcname="aclImdb")
        for info, payload in extra:
            if payload is not None:
                info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    shutil.rmtree(tmp / "src")
    return path


def truncated_archive(tmp: Path) -> Path:
    path = imdb_archive(tmp)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    return path


def truncate_file(path: Path) -> Path:
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    return path


def swap_vocab(run_dir: Path) -> Path:
    vocab = json.loads((run_dir / "vocab.json").read_text())
    vocab["itos"][5], vocab["itos"][6] = vocab["itos"][6], vocab["itos"][5]
    (run_dir / "vocab.json").write_text(json.dumps(vocab))
    return run_dir


def edit_config(run_dir: Path, old: str, new: str) -> Path:
    text = (run_dir / "config.yaml").read_text()
    assert old in text
    (run_dir / "config.yaml").write_text(text.replace(old, new))
    return run_dir


def data_without(tmp: Path, folder: str) -> Path:
    data = small_data(tmp)
    shutil.rmtree(data / "aclImdb" / folder)
    return data


def data_with_directory_as_review(tmp: Path) -> Path:
    data = small_data(tmp)
    (data / "aclImdb" / "train" / "pos" / "99_9.txt").mkdir()
    return data


def data_with_empty_folder(tmp: Path) -> Path:
    data = small_data(tmp)
    for f in (data / "aclImdb" / "train" / "neg").iterdir():
        f.unlink()
    return data


def data_with_cache_file(tmp: Path) -> Path:
    data = small_data(tmp)
    write(data / "cache", "not a directory")
    return data


def foreign_checkpoint(run_dir: Path) -> Path:
    torch.save({"weights": torch.zeros(3)}, run_dir / BEST)
    return run_dir


D = "data.data_dir"
NEW = "new-run"  # a --run-dir that a failed `train` must not create

# (id, args built from the world and the case's tmp dir, needles in the error line, exit code)
CASES: list[tuple[str, Callable[[SimpleNamespace, Path], list], list[str], int]] = [
    # ---- the config
    ("yaml-syntax", lambda w, t: ["train", "--config", write(t / "c.yaml", "model:\n  rnn: gru\n  hidden_size: [128\n")],
     ["c.yaml", "YAML syntax error at line"], 1),
    ("unknown-key", lambda w, t: ["train", "--config", write(t / "c.yaml", "model:\n  rnnn: gru\n")],
     ["model.rnnn", "did you mean 'rnn'"], 1),
    ("unknown-section", lambda w, t: ["train", "--set", "modle.rnn=gru"], ["modle"], 1),
    ("wrong-type", lambda w, t: ["train", "--config", write(t / "c.yaml", "model:\n  hidden_size: big\n")],
     ["model.hidden_size", "integer", "'big'"], 1),
    ("section-is-scalar", lambda w, t: ["train", "--set", "model=3"], ["model", "mapping"], 1),
    ("value-is-mapping", lambda w, t: ["train", "--set", "train.epochs.x=1"], ["train.epochs", "integer"], 1),
    ("out-of-range-lr", lambda w, t: ["train", "--set", "train.lr=-1"], ["train.lr", "> 0"], 1),
    ("out-of-range-dropout", lambda w, t: ["train", "--set", "model.dropout=1.5"], ["model.dropout"], 1),
    ("glove-dim-unknown", lambda w, t: ["train", "--set", "data.glove_dim=64"], ["data.glove_dim"], 1),
    ("config-missing", lambda w, t: ["train", "--config", t / "nope.yaml"], ["nope.yaml", "not found"], 1),
    ("config-is-a-directory", lambda w, t: ["train", "--config", t], ["cannot read config file"], 1),
    ("config-not-a-mapping", lambda w, t: ["train", "--config", write(t / "c.yaml", "- model\n- train\n")],
     ["expected a mapping"], 1),
    ("config-not-utf8", lambda w, t: ["train", "--config", write(t / "c.yaml", b"model:\n  rnn: \xff\xfe\n")],
     ["cannot read config file"], 1),
    ("set-without-equals", lambda w, t: ["train", "--set", "epochs"], ["KEY=VALUE"], 1),
    ("set-empty-key", lambda w, t: ["train", "--set", "=3"], ["key is empty"], 1),
    ("set-empty-part", lambda w, t: ["train", "--set", "model..rnn=gru"], ["malformed"], 1),
    # ---- the data
    ("data-missing", lambda w, t: ["train", "--set", f"{D}={t / 'none'}", "--run-dir", t / NEW],
     ["not found", "make download-data"], 2),
    ("data-partial", lambda w, t: ["train", "--set", f"{D}={data_without(t, 'test/neg')}", "--run-dir", t / NEW],
     ["incomplete", "test/neg"], 2),
    ("data-folder-without-reviews", lambda w, t: ["train", "--set", f"{D}={data_with_empty_folder(t)}",
                                                  "--run-dir", t / NEW], ["no reviews in", "neg"], 2),
    # tests run as root, so chmod 000 blocks nothing: a directory where a review file should be is unreadable
    ("review-unreadable", lambda w, t: ["train", "--set", f"{D}={data_with_directory_as_review(t)}",
                                        "--run-dir", t / NEW], ["99_9.txt", "directory"], 1),
    ("cache-dir-is-a-file", lambda w, t: ["prepare", "--set", f"{D}={data_with_cache_file(t)}"],
     ["cannot write"], 1),
    ("glove-dim-not-on-disk", lambda w, t: ["train", "--set", f"{D}={w.data}", "--set", "data.glove_dim=100",
                                            "--run-dir", t / NEW], ["100d", "on disk: 50d"], 2),
    ("no-training-reviews-left", lambda w, t: ["train", "--set", f"{D}={w.data}", "--set", "data.valid_fraction=0.999",
                                               "--run-dir", t / NEW], ["training split is empty"], 1),
    ("no-validation-reviews-left", lambda w, t: ["train", "--set", f"{D}={w.data}", "--set", "data.valid_fraction=0.01",
                                                 "--run-dir", t / NEW],
     ["validation split is empty", "valid_fraction=0.01 of each class rounds to no row"], 1),
    # ---- download
    ("archive-truncated", lambda w, t: ["download", "--imdb-source", truncated_archive(t), "--data-dir", dl_dir(t),
                                        "--skip-glove"], ["truncated or corrupt"], 1),
    ("archive-not-imdb", lambda w, t: ["download", "--imdb-source", write(t / "x.txt", "hello"),
                                       "--data-dir", dl_dir(t), "--skip-glove"], ["truncated or corrupt"], 1),
    ("checksum-mismatch", lambda w, t: ["download", "--imdb-source", imdb_archive(t), "--imdb-sha256", "0" * 64,
                                        "--data-dir", dl_dir(t), "--skip-glove"], ["sha256", "0" * 64], 1),
    ("download-source-missing", lambda w, t: ["download", "--imdb-source", t / "nope.tar.gz", "--data-dir", dl_dir(t),
                                              "--skip-glove"], ["nope.tar.gz", "does not exist"], 1),
    ("download-data-dir-is-a-file", lambda w, t: ["download", "--imdb-source", imdb_archive(t),
                                                  "--data-dir", write(t / "dl", "x"), "--skip-glove"], ["dl"], 1),
    # ---- run directories and resuming
    ("run-dir-exists", lambda w, t: ["train", "--set", f"{D}={w.data}", "--run-dir", w.run],
     ["already exists", "--resume", "--overwrite"], 1),
    ("run-dir-is-a-file", lambda w, t: ["train", "--set", f"{D}={w.data}", "--run-dir", write(t / "f", "x")],
     ["is a file"], 1),
    # --overwrite must not delete the old run when the new one cannot start
    ("overwrite-with-missing-data", lambda w, t: ["train", "--set", f"{D}={t / 'none'}", "--run-dir", copy_run(w, t),
                                                  "--overwrite"], ["not found"], 2),
    # --overwrite replaces only a run directory, and never through a symbolic link
    ("overwrite-not-a-run", lambda w, t: ["train", "--set", f"{D}={w.data}", "--run-dir",
                                          write(t / "notes" / "a.txt", "x").parent, "--overwrite"],
     ["replaces only a run directory", "not one", "nothing was deleted"], 1),
    ("overwrite-a-symlink", lambda w, t: ["train", "--set", f"{D}={w.data}", "--run-dir", symlink_to(copy_run(w, t)),
                                          "--overwrite"], ["symbolic link"], 1),
    ("resume-not-a-run", lambda w, t: ["train", "--resume", write(t / "d" / "notes.txt", "x").parent],
     ["not a run directory"], 1),
    ("resume-missing", lambda w, t: ["train", "--resume", t / "nope"], ["not found"], 1),
    ("resume-without-last", lambda w, t: ["train", "--resume", _unlink(copy_run(w, t), LAST)], ["no last.pt"], 1),
    ("eval-relative-data-from-elsewhere", lambda w, t: ["eval", "--run", trained_elsewhere(w, t)],
     ["data.data_dir faults", "not found in", "relative to the directory `sentiment train` ran from",
      "run this command from"],
     1),
    ("resume-changed-model", lambda w, t: ["train", "--resume", copy_run(w, t), "--set", "model.hidden_size=64",
                                           "--set", "model.rnn=lstm"], ["model.hidden_size", "model.rnn"], 1),
    ("resume-changed-config-file", lambda w, t: ["train", "--resume", copy_run(w, t), "--config",
                                                 write(t / "c.yaml", "model:\n  rnn: lstm\n")], ["model.rnn"], 1),
    ("resume-corrupt-last", lambda w, t: ["train", "--resume", _corrupt(copy_run(w, t), LAST)],
     ["last.pt", "corrupt"], 1),
    ("resume-other-vocab", lambda w, t: ["train", "--resume", swap_vocab(copy_run(w, t))], ["another vocab"], 1),
    ("resume-data-missing", lambda w, t: ["train", "--resume", copy_run(w, t), "--set", f"{D}={t / 'none'}"],
     ["not found"], 2),
    # ---- eval
    ("eval-other-vocab", lambda w, t: ["eval", "--run", swap_vocab(copy_run(w, t))], ["another vocab"], 1),
    ("eval-truncated-checkpoint", lambda w, t: ["eval", "--run", _corrupt(copy_run(w, t), BEST)],
     ["best.pt", "corrupt"], 1),
    ("eval-garbage-checkpoint", lambda w, t: ["eval", "--run", _garbage(copy_run(w, t), BEST)], ["corrupt"], 1),
    ("eval-foreign-checkpoint", lambda w, t: ["eval", "--run", foreign_checkpoint(copy_run(w, t))],
     ["not a checkpoint written by"], 1),
    ("eval-checkpoint-of-other-model", lambda w, t: ["eval", "--run", edit_config(copy_run(w, t), "hidden_size: 16",
                                                                                  "hidden_size: 32")],
     ["does not fit"], 1),
    ("eval-config-invalid-yaml", lambda w, t: ["eval", "--run", _overwrite(copy_run(w, t), "config.yaml", "data: [\n")],
     ["config.yaml", "YAML syntax error"], 1),
    ("eval-vocab-corrupt", lambda w, t: ["eval", "--run", _overwrite(copy_run(w, t), "vocab.json", '{"itos": [')],
     ["vocab.json", "corrupt"], 1),
    ("eval-split-bad", lambda w, t: ["eval", "--run", w.run, "--split", "dev"], ["--split", "'dev'"], 1),
    ("eval-checkpoint-bad", lambda w, t: ["eval", "--run", w.run, "--checkpoint", "middle"], ["--checkpoint"], 1),
    ("eval-batch-size-zero", lambda w, t: ["eval", "--run", w.run, "--batch-size", "0"], ["--batch-size"], 1),
    ("eval-data-unknown-label", lambda w, t: ["eval", "--run", w.run, "--data",
                                              write(t / "l.csv", "text,label\ngreat,pos\nmeh,maybe\n")],
     ["line 3", "unknown label 'maybe'"], 1),
    ("eval-data-missing-column", lambda w, t: ["eval", "--run", w.run, "--data",
                                               write(t / "l.jsonl", '{"text": "great", "stars": 9}\n')],
     ["no field 'label'"], 1),
    ("eval-data-all-empty", lambda w, t: ["eval", "--run", w.run, "--data",
                                          write(t / "l.csv", "text,label\n,pos\n<br />,neg\n")],
     ["every review is empty"], 1),
    # ---- a run directory missing a file it needs: one error naming that file
    ("predict-labels-missing", lambda w, t: ["predict", "--run", _unlink(fixture_run(t), "labels.json"), "great"],
     ["labels.json", "not found"], 1),
    ("eval-labels-missing", lambda w, t: ["eval", "--run", _unlink(fixture_run(t), "labels.json")],
     ["labels.json", "not found"], 1),
    ("resume-labels-missing", lambda w, t: ["train", "--resume", _unlink(fixture_run(t), "labels.json")],
     ["labels.json", "not found"], 1),
    ("predict-config-missing", lambda w, t: ["predict", "--run", _unlink(copy_run(w, t), "config.yaml"), "great"],
     ["config.yaml", "not found"], 1),
    ("predict-vocab-missing", lambda w, t: ["predict", "--run", _unlink(copy_run(w, t), "vocab.json"), "great"],
     ["vocab.json", "not found"], 1),
    ("predict-best-missing", lambda w, t: ["predict", "--run", _unlink(copy_run(w, t), BEST), "great"],
     ["best.pt", "not found"], 1),
    # ---- predict
    ("predict-empty-text", lambda w, t: ["predict", "--run", w.run, ""], ["empty"], 1),
    ("predict-only-markup", lambda w, t: ["predict", "--run", w.run, "<br /><br />", "  "], ["every review is empty"], 1),
    ("predict-binary-file", lambda w, t: ["predict", "--run", w.run, "--file",
                                          write(t / "junk.txt", b"great\n\x00\x01\x02\xff\x00")], ["NUL", "binary"], 1),
    ("predict-missing-file", lambda w, t: ["predict", "--run", w.run, "--file", t / "nope.txt"], ["not found"], 1),
    ("predict-file-is-directory", lambda w, t: ["predict", "--run", w.run, "--file", t], ["is a directory"], 1),
    ("predict-threshold", lambda w, t: ["predict", "--run", w.run, "--threshold", "2", "great"], ["--threshold"], 1),
]


def fixture_run(tmp: Path) -> Path:
    """A copy of the three-class `files` run kept in tests/fixtures (labels good/bad/... are not IMDB's)."""
    return Path(shutil.copytree(Path(__file__).parent / "fixtures" / "run_v0_files", tmp / "run"))


def _unlink(run_dir: Path, name: str) -> Path:
    (run_dir / name).unlink()
    return run_dir


def _corrupt(run_dir: Path, name: str) -> Path:
    truncate_file(run_dir / name)
    return run_dir


def _garbage(run_dir: Path, name: str) -> Path:
    (run_dir / name).write_bytes(b"\x80\x04not a checkpoint at all" * 20)
    return run_dir


def _overwrite(run_dir: Path, name: str, text: str) -> Path:
    (run_dir / name).write_text(text)
    return run_dir


@pytest.mark.parametrize("build, needles, exit_code", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(world, tmp_path, build, needles, exit_code):
    args = build(world, tmp_path)
    before = snapshot(world.data, world.runs, tmp_path)
    code, text = run(*args)
    one_line_error(code, text, *needles)
    assert code == exit_code, text
    assert snapshot(world.data, world.runs, tmp_path) == before


def test_stdin_with_nul_bytes(world):
    one_line_error(*run("predict", "--run", world.run, input="great film\n\x00\x00junk\n"), "NUL")


# ---------------------------------------------------------------- faults while training
def test_disk_full_while_writing_a_checkpoint_keeps_the_previous_one(world, tmp_path, monkeypatch):
    real = checkpoint_mod.atomic_write
    saves = {"last": 0}

    def filling_disk(path, write):
        if Path(path).name == LAST:
            saves["last"] += 1
            if saves["last"] == 4:  # epoch 1, step 4: half the bytes reach the disk, then it is full

                class Full:
                    def __init__(self, f):
                        self.f = f

                    def write(self, b):
                        self.f.write(bytes(b)[: len(b) // 2])
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                return real(path, lambda f: write(Full(f)))
        return real(path, write)

    monkeypatch.setattr(checkpoint_mod, "atomic_write", filling_disk)
    run_dir = tmp_path / "full"
    code, text = run("train", "--set", f"data.data_dir={world.data}", *FAST, "--run-dir", run_dir)
    one_line_error(code, text, "cannot write", "last.pt", "No space left on device", "previous version is intact")
    assert saves["last"] == 4
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    state = load_checkpoint(run_dir / LAST)  # the previous last.pt, whole
    assert (state["loop"]["epoch"], state["loop"]["step_in_epoch"]) == (0, 3)

    monkeypatch.setattr(checkpoint_mod, "atomic_write", real)  # space freed: resume ends where a clean run does
    code, text = run("train", "--resume", run_dir)
    assert code == 0, text
    assert same_weights(run_dir / LAST, world.run / LAST) and same_weights(run_dir / BEST, world.run / BEST)
    assert timing_free(read_metrics(run_dir)) == timing_free(read_metrics(world.run))


def test_nan_loss_names_epoch_and_step_and_keeps_last_good(world, tmp_path, monkeypatch):
    poison_loss(monkeypatch, STEPS_PER_EPOCH + 2)  # epoch 2, step 3
    run_dir = tmp_path / "nan"
    code, text = run("train", "--set", f"data.data_dir={world.data}", *TINY, "--run-dir", run_dir)  # last.pt: epoch ends
    one_line_error(code, text, "epoch 2, step 3", "last.pt holds the last good state")
    assert code == 3
    last = load_checkpoint(run_dir / LAST)
    assert (last["loop"]["epoch"], last["loop"]["step_in_epoch"]) == (1, 0)
    assert all(torch.isfinite(t).all() for t in last["model"].values())
    assert same_weights(run_dir / BEST, run_dir / LAST)


@pytest.mark.parametrize("clip", ["5.0", "null"])
def test_nan_gradient_with_a_finite_loss_never_reaches_the_weights(world, tmp_path, monkeypatch, clip):
    # last.pt after every step: a step taken on the NaN gradient would be saved as "the last good state"
    poison_gradient(monkeypatch, STEPS_PER_EPOCH + 2)  # epoch 2, step 3
    run_dir = tmp_path / "nan-grad"
    code, text = run("train", "--set", f"data.data_dir={world.data}", *FAST, "--set", f"train.grad_clip={clip}",
                     "--run-dir", run_dir)
    one_line_error(code, text, "gradient norm became nan", "epoch 2, step 3", "last.pt holds the last good state")
    assert code == 3
    last = load_checkpoint(run_dir / LAST)
    assert (last["loop"]["epoch"], last["loop"]["step_in_epoch"]) == (1, 2)
    assert all(torch.isfinite(t).all() for t in last["model"].values())
    assert all(torch.isfinite(t).all() for s in last["optimizer"]["state"].values() for t in s.values())


def test_nan_loss_before_any_checkpoint_says_so(world, tmp_path, monkeypatch):
    poison_loss(monkeypatch, 1)  # epoch 1, step 2; last.pt is written at the end of an epoch
    run_dir = tmp_path / "nan"
    code, text = run("train", "--set", f"data.data_dir={world.data}", *TINY, "--run-dir", run_dir)
    one_line_error(code, text, "epoch 1, step 2", "no checkpoint was written")
    assert not (run_dir / LAST).exists()


def test_non_utf8_review_files_are_decoded_and_counted(tmp_path):
    from conftest import make_imdb

    data = make_imdb(tmp_path / "data", n_per_class=12)
    for folder in ("train/pos", "train/neg", "test/pos"):  # Latin-1 and stray bytes: not UTF-8
        path = sorted((data / "aclImdb" / folder).iterdir())[0]
        path.write_bytes(b"Un film g\xe9nial, great fun! \xff\xfe " + path.read_bytes())
    code, text = run("prepare", "--set", f"data.data_dir={data}")
    assert code == 0, text
    assert "3 review files had invalid UTF-8" in text
    code, text = run("train", "--set", f"data.data_dir={data}", *FAST, "--set", "train.epochs=1",
                     "--run-dir", tmp_path / "run")
    assert code == 0, text
    assert (tmp_path / "run" / BEST).is_file()
    test_dir = data / "aclImdb" / "test"
    code, text = run("eval", "--run", tmp_path / "run", "--data", test_dir)  # a pos/neg folder: counted as predict does
    assert code == 0, text
    assert "1 files of" in text and "had invalid UTF-8" in text


def test_lazy_sync_skips_a_non_finite_step_on_the_device_and_stops_when_it_reads_the_flag(world, tmp_path, monkeypatch):
    """train.lazy_sync (the CUDA default) never waits for the device inside a step: fused Adam skips the step
    whose gradient is NaN, and the loop stops when it next reads its sums, before any save."""
    poison_gradient(monkeypatch, STEPS_PER_EPOCH + 2)  # epoch 2, step 3
    run_dir = tmp_path / "nan-grad-lazy"
    code, text = run("train", "--set", f"data.data_dir={world.data}", *FAST, "--set", "train.lazy_sync=true",
                     "--run-dir", run_dir)
    one_line_error(code, text, "1 step(s) had a non-finite loss or gradient", "epoch 2, step 3",
                   "last.pt holds the last good state")
    assert code == 3
    last = load_checkpoint(run_dir / LAST)
    assert (last["loop"]["epoch"], last["loop"]["step_in_epoch"]) == (1, 2)
    assert all(torch.isfinite(t).all() for t in last["model"].values())
    assert all(torch.isfinite(t).all() for s in last["optimizer"]["state"].values() for t in s.values())


def test_lazy_sync_reports_the_same_epoch_figures(world, tmp_path):
    """Reading the sums from the device when reporting gives the epoch rows the per-step reads give."""
    rows = {}
    for lazy in ("true", "false"):
        run_dir = tmp_path / f"lazy-{lazy}"
        code, text = run("train", "--set", f"data.data_dir={world.data}", *FAST, "--set", f"train.lazy_sync={lazy}",
                         "--run-dir", run_dir)
        assert code == 0, text
        rows[lazy] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(rows["true"], rows["false"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["train_accuracy"] == b["train_accuracy"] and a["valid_accuracy"] == b["valid_accuracy"]


def test_an_imdb_run_from_before_labels_json_still_predicts(world, tmp_path):
    """IMDB runs written before label spaces had no labels.json: theirs are negative/positive."""
    run_dir = _unlink(copy_run(world, tmp_path), "labels.json")
    code, text = run("predict", "--run", run_dir, "--json", "great wonderful film")
    assert code == 0, text
    assert json.loads(text.strip().splitlines()[-1])["label"] in ("negative", "positive")


# ---------------------------------------------------------------- one writer per run directory
@pytest.mark.parametrize("how", ["new", "overwrite", "resume"])
def test_a_second_training_into_a_run_directory_is_refused(world, tmp_path, how):
    from test_runlock import hold

    run_dir = copy_run(world, tmp_path) if how != "new" else tmp_path / "run"
    holder = hold(run_dir)
    try:
        before = snapshot(tmp_path)
        args = (["--resume", run_dir] if how == "resume" else
                ["--set", f"{D}={world.data}", *FAST, "--run-dir", run_dir, *(["--overwrite"] if how == "overwrite" else [])])
        one_line_error(*run("train", *args), "being written by another training", f"pid {holder.pid}")
        assert snapshot(tmp_path) == before
    finally:
        holder.stdin.close()
        holder.wait(10)


def test_a_start_that_fails_before_its_first_checkpoint_leaves_nothing(world, tmp_path, monkeypatch):
    """config, vocab, labels and splits are written before training: a rerun must not find them ("already
    exists"), nor must --resume ("no last.pt")."""
    run_dir = tmp_path / "nan"
    with monkeypatch.context() as m:
        poison_loss(m, 1)  # epoch 1, step 2: before any last.pt
        one_line_error(*run("train", "--set", f"{D}={world.data}", *TINY, "--run-dir", run_dir), "no checkpoint")
    assert not run_dir.exists() and list(tmp_path.iterdir()) == []
    code, text = run("train", "--set", f"{D}={world.data}", *TINY, "--run-dir", run_dir)
    assert code == 0, text


# ---------------------------------------------------------------- --overwrite: only a run, replaced only once the new one has a checkpoint
def contents(root: Path) -> dict[str, bytes]:
    """Every file under root, byte for byte, by its path relative to root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["working directory", "parent", "home"])
def test_overwrite_never_replaces_the_working_directory_its_parents_or_home(world, tmp_path, monkeypatch, where):
    """Each of them looks like a run directory here (run.json): --overwrite still refuses it, deleting nothing."""
    work = tmp_path / "work" / "here"
    home = tmp_path / "home"
    for folder in (work, work.parent, home):
        write(folder / "run.json", '{"format_version": 1}\n')
        write(folder / "data.csv", "text,label\ngreat,pos\n")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    target = {"working directory": ".", "parent": "..", "home": str(home)}[where]
    before = contents(tmp_path)
    one_line_error(*run("train", "--set", f"{D}={world.data}", *TINY, "--run-dir", target, "--overwrite"),
                   "--overwrite refuses to replace", "home directory" if where == "home" else "working directory")
    assert contents(tmp_path) == before


def three_class_csv(tmp: Path) -> Path:
    rows = ["text,label"] + [f"{word} film {i},{label}" for i in range(30)
                             for word, label in (("great", "pos"), ("awful", "neg"), ("fine", "mixed"))]
    return write(tmp / "three.csv", "\n".join(rows) + "\n")


LATE_FAILURES = {  # config checks made after the run directory is claimed, and an interruption there
    "nb-weighting-on-three-classes": lambda w, t: (["--data", three_class_csv(t), "--set", f"{D}={w.data}",
                                                    "--set", "model.ngrams.n=2",
                                                    "--set", "model.ngrams.weighting=nb"], "two classes"),
    "init-from-another-embedding-width": lambda w, t: (["--set", f"{D}={w.data}", "--set", f"model.init_from={w.run}",
                                                        "--set", "data.glove_dim=null", "--set", "model.embed_dim=8"],
                                                       "embedding size"),
    "ctrl-c-before-the-first-checkpoint": lambda w, t: (["--set", f"{D}={w.data}"], "interrupted"),
}


@pytest.mark.parametrize("case", list(LATE_FAILURES))
def test_a_finished_run_survives_an_overwrite_that_fails_before_its_first_checkpoint(world, tmp_path, monkeypatch,
                                                                                   case):
    run_dir = copy_run(world, tmp_path)
    args, needle = LATE_FAILURES[case](world, tmp_path)
    if case.startswith("ctrl-c"):
        import sentiment.training.train as train_mod

        def interrupt(*a, **kw):
            raise KeyboardInterrupt

        monkeypatch.setattr(train_mod, "init_statistics", interrupt)  # after the run files are written
    before, siblings = contents(run_dir), sorted(p.name for p in tmp_path.iterdir())
    code, text = run("train", *TINY, *args, "--run-dir", run_dir, "--overwrite")  # the case's settings win
    assert code != 0 and needle in text and "Traceback" not in text, text
    assert contents(run_dir) == before  # byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == siblings  # nothing set aside left beside it


def test_an_overwrite_sets_the_old_run_aside_until_the_new_one_has_a_checkpoint(world, tmp_path, monkeypatch):
    import sentiment.training.engine as engine_mod

    run_dir = copy_run(world, tmp_path)
    write(run_dir / "notes.txt", "the old run's")
    aside_at_save, save = [], engine_mod.save_checkpoint

    def recording_save(path, state):
        aside_at_save.append([p.name for p in tmp_path.glob(".run.replaced-*")])
        save(path, state)

    monkeypatch.setattr(engine_mod, "save_checkpoint", recording_save)
    code, text = run("train", "--set", f"{D}={world.data}", *FAST, "--run-dir", run_dir, "--overwrite")
    assert code == 0, text
    assert aside_at_save[0] == [f".run.replaced-{os.getpid()}"] and aside_at_save[1] == []  # deleted after the first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and not (run_dir / "notes.txt").exists()


# ---------------------------------------------------------------- a killed --overwrite: the next train recovers
def dead_pid() -> int:
    """The pid of a process that has ended and been reaped."""
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def half_started(run_dir: Path) -> Path:
    """What a replacing run writes before its first checkpoint (its run files, a write cut short)."""
    for name in ("run.json", "config.yaml", "vocab.json", "labels.json", "splits.npz", ".last.pt.x1y2.tmp"):
        write(run_dir / name, "new run's")
    return run_dir


def test_an_overwrite_killed_before_its_first_checkpoint_is_put_back_by_the_next_train(world, tmp_path):
    """A real kill -9 of `python -m sentiment train --overwrite` once it has set the old run aside; the next
    train of that directory puts the old run back, byte for byte, and says so."""
    from test_resume_kill import Trainer, wait_until

    run_dir = Path(shutil.copytree(world.run, tmp_path / "runs" / "run"))
    before = contents(run_dir)
    slow = ["--set", "model.hidden_size=256", "--set", "train.batch_size=2"]  # a first epoch of ~1 s to kill in
    trainer = Trainer(tmp_path, "killed", "--set", f"{D}={world.data}", *TINY, *slow, "--run-dir", str(run_dir),
                      "--overwrite")
    aside = run_dir.parent / f".run.replaced-{trainer.proc.pid}"
    wait_until(trainer, lambda: (run_dir / "run.json").exists() and aside.exists(), pause=0.001)
    trainer.proc.kill()
    trainer.proc.wait()
    assert aside.is_dir() and not any((run_dir / c).exists() for c in (BEST, LAST)), trainer.fail("killed too late")
    code, text = run("train", "--set", f"{D}={world.data}", *TINY, "--run-dir", run_dir)
    one_line_error(code, text, "already exists")
    assert "put back" in text and f"pid {trainer.proc.pid}" in text, text
    assert contents(run_dir) == before
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["run"]


def test_a_killed_overwrite_is_put_back_before_a_new_overwrite_or_a_resume(world, tmp_path):
    """The old run back, the replacing run's start removed; then --overwrite replaces it as asked, and a --resume
    of a directory the kill left missing continues the old run."""
    run_dir = tmp_path / "run"
    aside = Path(shutil.copytree(world.run, tmp_path / f".run.replaced-{dead_pid()}"))
    write(aside / "notes.txt", "the old run's")
    half_started(run_dir)
    code, text = run("train", "--set", f"{D}={world.data}", *TINY, "--run-dir", run_dir, "--overwrite")
    assert code == 0 and "put back" in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and (run_dir / LAST).is_file()
    assert not (run_dir / "notes.txt").exists()  # put back, then replaced by the new run as asked

    shutil.rmtree(run_dir)
    shutil.copytree(world.run, tmp_path / f".run.replaced-{dead_pid()}")  # killed right after the rename
    code, text = run("train", "--resume", run_dir)
    assert code == 0 and "put back" in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_killed_overwrite_whose_new_run_has_a_checkpoint_has_its_aside_deleted(world, tmp_path):
    run_dir = copy_run(world, tmp_path)
    before = contents(run_dir)
    shutil.copytree(world.run, tmp_path / f".run.replaced-{dead_pid()}")
    one_line_error(*run("train", "--set", f"{D}={world.data}", *TINY, "--run-dir", run_dir), "already exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and contents(run_dir) == before


@pytest.mark.parametrize("case", ["the directory holds other files", "its process runs", "a writer holds the lock",
                                  "not a run directory"])
def test_an_aside_is_left_alone_unless_it_is_surely_a_killed_overwrites(world, tmp_path, case):
    """Nothing is deleted or moved that might be someone's: a directory holding files no starting run writes, an
    aside whose process is alive or whose directory is locked, a folder that only has the name."""
    from test_runlock import hold

    run_dir = half_started(tmp_path / "run")
    pid = os.getppid() if case == "its process runs" else dead_pid()
    aside = Path(shutil.copytree(world.run, tmp_path / f".run.replaced-{pid}"))
    if case == "the directory holds other files":
        write(run_dir / "notes.txt", "mine")
    if case == "not a run directory":
        (aside / "run.json").unlink()
        (aside / "config.yaml").unlink()
    holder = hold(run_dir) if case == "a writer holds the lock" else None
    try:
        before = snapshot(tmp_path)
        code, text = run("train", "--set", f"{D}={world.data}", *TINY, "--run-dir", run_dir)
        assert snapshot(tmp_path) == before
    finally:
        if holder is not None:
            holder.stdin.close()
            holder.wait(10)
    assert code != 0 and "put back" not in text, text
    assert ("kept" in text) == (case == "the directory holds other files"), text


def test_of_two_killed_overwrites_one_run_is_put_back_and_the_other_kept(world, tmp_path):
    """Runs killed before recovery existed may have stacked two asides: which one is wanted is not guessed."""
    for _ in range(2):
        shutil.copytree(world.run, tmp_path / f".run.replaced-{dead_pid()}")
    code, text = run("train", "--resume", tmp_path / "run")
    assert code == 0 and text.count("put back") == 1 and text.count("note: kept") == 1, text
    assert len(list(tmp_path.glob(".run.replaced-*"))) == 1 and (tmp_path / "run" / LAST).is_file()


@pytest.mark.parametrize("command", [["pretrain"], ["pretrain", "--nproc", "2"], ["train", "--nproc", "2"]])
def test_pretrain_and_the_nproc_launcher_put_a_killed_overwrites_run_back(world, tmp_path, monkeypatch, command):
    """Under --nproc the aside bears the launcher's pid, and the launcher recovers before starting any rank."""
    run_dir = tmp_path / "run"
    shutil.copytree(world.run, tmp_path / f".run.replaced-{dead_pid()}")
    args = [*command, "--set", f"{D}={world.data}", "--run-dir", str(run_dir)]
    monkeypatch.setattr("sys.argv", ["sentiment", *args])  # what the launcher passes on to its ranks
    one_line_error(*run(*args), "already exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"] and contents(run_dir) == contents(world.run)


def test_the_files_a_start_writes_are_those_recovery_may_remove():
    from sentiment import runs
    from sentiment.cli.train import CHECKPOINTS, STARTING_FILES
    from sentiment.runstatus import STATUS_FILE

    assert STARTING_FILES == {runs.RUN_FILE, runs.CONFIG_FILE, runs.VOCAB_FILE, runs.LABELS_FILE, runs.SPLITS_FILE,
                              runs.DATA_FINGERPRINT_FILE, runs.TRAIN_TEXTS, runs.PRETRAIN_TEXTS, runs.METRICS_FILE,
                              STATUS_FILE}
    assert CHECKPOINTS == (runs.BEST, runs.LAST)


def test_resuming_a_run_another_process_is_still_starting_says_so(world, tmp_path):
    from test_runlock import hold

    run_dir = _unlink(copy_run(world, tmp_path), LAST)
    holder = hold(run_dir)
    try:
        one_line_error(*run("train", "--resume", run_dir), "no last.pt yet", f"another process (pid {holder.pid})")
    finally:
        holder.stdin.close()
        holder.wait(10)
    one_line_error(*run("train", "--resume", run_dir), "never finished a step")


def test_an_empty_validation_split_of_repeated_texts_names_the_repeats(tmp_path):
    """Not valid_fraction (10% of 20 rows a class asks 2 a class): every text has 4 copies, kept on one side."""
    code, text = run("train", "--data", repeated_texts_csv(tmp_path), "--set", f"{D}={tmp_path}", "--set",
                     "data.glove_dim=null", "--set", "model.embed_dim=8", "--run-dir", tmp_path / NEW)
    one_line_error(code, text, "validation split is empty", "asks for 4 row(s)", "texts repeat (30 row(s)",
                   "copies of a text stay on one side")
    assert not (tmp_path / NEW).exists()
