"""Nothing in a checkpoint, config, archive or data file is ever run as code or written outside its place."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sentiment.runs import BEST, LAST, load_checkpoint
from sentiment.cli import app
from sentiment.config import load_config
from sentiment.errors import SentimentError
from conftest import one_line_error

runner = CliRunner()
FAST = ["--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "model.hidden_size=8"]


def run(*args, input: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args], input=input)
    return result.exit_code, result.output


class Payload:
    """Unpickling this creates `marker`: what a malicious checkpoint would do, only harmless."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    from conftest import make_imdb

    base = tmp_path_factory.mktemp("security")
    data = make_imdb(base / "data", n_per_class=20)
    code, text = run("train", "--set", f"data.data_dir={data}", *FAST, "--run-dir", base / "run")
    assert code == 0, text
    return base / "run", data


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_with_code_is_refused_and_nothing_runs(trained, tmp_path):
    run_dir = Path(shutil.copytree(trained[0], tmp_path / "run"))
    marker = tmp_path / "pwned"
    state = load_checkpoint(run_dir / BEST)
    state["extra"] = Payload(marker)
    torch.save(state, run_dir / BEST)  # an ordinary pickle would call open(marker, "w") on load
    assert not marker.exists()

    with pytest.raises(SentimentError, match="refused") as error:
        load_checkpoint(run_dir / BEST)
    assert "\n" not in str(error.value)
    assert not marker.exists()

    one_line_error(*run("eval", "--run", run_dir), "best.pt", "refused")
    one_line_error(*run("predict", "--run", run_dir, "great film"), "refused")
    assert not marker.exists()


def test_resume_from_a_checkpoint_with_code_runs_nothing(trained, tmp_path):
    run_dir = Path(shutil.copytree(trained[0], tmp_path / "run"))
    marker = tmp_path / "pwned"
    torch.save({"format": 1, "model": {}, "loop": Payload(marker)}, run_dir / LAST)
    before = (run_dir / LAST).read_bytes()
    one_line_error(*run("train", "--resume", run_dir), "last.pt", "refused")
    assert not marker.exists()
    assert (run_dir / LAST).read_bytes() == before  # refused, not replaced


# ---------------------------------------------------------------- configs
TAG = '!!python/object/apply:os.system ["touch {marker}"]'


def test_yaml_python_tags_are_an_error_and_run_nothing(tmp_path):
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(f"run:\n  name: {TAG.format(marker=marker)}\n")
    one_line_error(*run("train", "--config", config, "--print-config"), "evil.yaml")
    with pytest.raises(SentimentError):
        load_config(config)
    assert not marker.exists()


def test_yaml_python_tag_in_a_run_config_runs_nothing(trained, tmp_path):
    run_dir = Path(shutil.copytree(trained[0], tmp_path / "run"))
    marker = tmp_path / "pwned"
    text = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(text.replace("name: null", f"name: {TAG.format(marker=marker)}"))
    assert TAG.format(marker=marker) in (run_dir / "config.yaml").read_text()
    one_line_error(*run("eval", "--run", run_dir), "config.yaml")
    one_line_error(*run("train", "--resume", run_dir), "config.yaml")
    assert not marker.exists()


def test_set_with_a_python_tag_is_only_a_string(tmp_path):
    marker = tmp_path / "pwned"
    value = TAG.format(marker=marker)
    code, text = run("train", "--set", f"run.name={value}", "--print-config", "--run-dir", tmp_path / "never")
    assert code == 0, text
    assert "touch" in text and not marker.exists()
    assert load_config(None, [f"run.name={value}"]).run.name == value


@pytest.mark.parametrize("value", ["$(touch {marker})", "`touch {marker}`", "; touch {marker}",
                                   "__import__('os').system('touch {marker}')", "{{marker}}[red]x[/red]"])
def test_config_values_are_plain_strings(tmp_path, value):
    marker = tmp_path / "pwned"
    value = value.format(marker=marker)
    assert load_config(None, [f"data.data_dir={value}"]).data.data_dir == value
    code, text = run("train", "--set", f"data.data_dir={value}", "--print-config")
    assert code == 0, text
    # training with it looks for the data in a directory of exactly that name (relative to here)
    error = one_line_error(*run("prepare", "--set", f"data.data_dir={value}"), "not found")
    assert value in error  # shown literally: not run by a shell, not read as rich markup
    assert not marker.exists()


def test_review_and_glove_text_is_never_run(tmp_path):
    from conftest import make_imdb

    marker = tmp_path / "pwned"
    data = make_imdb(tmp_path / "data", n_per_class=8)
    evil = [f"$(touch {marker})", f"`touch {marker}`", f"__import__('os').system('touch {marker}')",
            f"{{{{ touch {marker} }}}}", "[bold red]markup[/]"]
    for i, text in enumerate(evil):
        (data / "aclImdb" / "train" / "pos" / f"{100 + i}_9.txt").write_text(f"great {text}", encoding="utf-8")
    with (data / "glove" / "glove.6B.50d.txt").open("a", encoding="utf-8") as f:
        f.write(f"$(touch{marker}) " + " ".join(["0.1"] * 50) + "\n")
    code, text = run("prepare", "--set", f"data.data_dir={data}")
    assert code == 0, text
    code, text = run("train", "--set", f"data.data_dir={data}", *FAST, "--run-dir", tmp_path / "run")
    assert code == 0, text
    code, text = run("predict", "--run", tmp_path / "run", "--json", *evil)
    assert code == 0, text
    assert not marker.exists()


# ---------------------------------------------------------------- archives
def evil_archive(tmp: Path, member: tarfile.TarInfo, payload: bytes | None) -> Path:
    """A complete small aclImdb plus one unsafe member."""
    from conftest import make_imdb

    src = make_imdb(tmp / "src", n_per_class=2, with_glove=False)
    path = tmp / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(src / "aclImdb", arcname="aclImdb")
        if payload is not None:
            member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload) if payload is not None else None)
    shutil.rmtree(src)
    return path


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("member, payload, reason", [
    (tarfile.TarInfo("../evil"), b"gotcha", "'..'"),
    (tarfile.TarInfo("aclImdb/../../evil"), b"gotcha", "'..'"),
    (tarfile.TarInfo("/tmp/sentiment-evil-abs"), b"gotcha", "absolute"),
    (_link("aclImdb/train/pos/99_9.txt", "/etc/passwd", tarfile.SYMTYPE), None, "symlink"),
    (_link("aclImdb/evil", "/etc/passwd", tarfile.LNKTYPE), None, "hardlink"),
    (_link("aclImdb/dev", "", tarfile.CHRTYPE), None, "device"),
    (_link("aclImdb/fifo", "", tarfile.FIFOTYPE), None, "device or fifo"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "char-device", "fifo"])
def test_download_refuses_unsafe_archive_members(tmp_path, member, payload, reason):
    archive = evil_archive(tmp_path, member, payload)
    data_dir = tmp_path / "place" / "data"
    data_dir.mkdir(parents=True)
    code, text = run("download", "--imdb-source", archive, "--data-dir", data_dir, "--skip-glove")
    one_line_error(code, text, "unsafe member", reason, "extracted nothing")
    assert code == 1
    assert sorted(p.name for p in data_dir.iterdir()) == []  # no aclImdb, no temporary directory, no manifest
    assert sorted(p.name for p in (tmp_path / "place").iterdir()) == ["data"]
    assert not (tmp_path / "evil").exists() and not Path("/tmp/sentiment-evil-abs").exists()


# ---------------------------------------------------------------- exported models
@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> dict[str, Path]:
    """The security run exported as torch.export (.pt2) and as ONNX, each with its sidecar."""
    base = tmp_path_factory.mktemp("security_export")
    paths = {}
    for fmt, name in (("torch", "model.pt2"), ("onnx", "model.onnx")):
        code, text = run("export", "--run", trained[0], "--format", fmt, "--out", base / name)
        assert code == 0, text
        paths[fmt] = base / name
    return paths


def hostile_copy(model: Path, out: Path, data: bytes) -> Path:
    """data written as `out`, beside a copy of model's sidecar whose sha256 matches it: whoever hands over a
    file can hand over a matching sidecar, so the digest alone protects nothing."""
    import hashlib
    import json

    from sentiment.inference.export import sidecar_path

    out.write_bytes(data)
    meta = json.loads(sidecar_path(model).read_text(encoding="utf-8"))
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    sidecar_path(out).write_text(json.dumps(meta), encoding="utf-8")
    return out


def rewritten_pt2(genuine: Path, change) -> bytes:
    """genuine's members, each passed through change(name, content) -> content (None: dropped), plus any
    extra members change.extra lists."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(genuine) as src, zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            content = change(info.filename, src.read(info))
            if content is not None:
                dst.writestr(info.filename, content)
        for name, content in getattr(change, "extra", {}).items():
            dst.writestr(name, content)
    return buf.getvalue()


def _pickled(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _evil_sample_inputs(marker: Path):
    # torch.export.load reads the sample inputs weights-only first, and unpickles them plainly if that fails
    return lambda name, content: _pickled(Payload(marker)) if name.endswith("sample_inputs/model.pt") else content


def _evil_guard(marker: Path):
    # the loader exec()s guards_code as Python when it builds the module
    import json

    def change(name, content):
        if not name.endswith("models/model.json"):
            return content
        program = json.loads(content)
        program["guards_code"] = [f"open({str(marker)!r}, 'w') is None"]
        return json.dumps(program).encode()
    return change


def _evil_shape(marker: Path):
    # the loader sympify()s every shape expression, and sympify is eval
    import json

    def poison(node) -> bool:
        if isinstance(node, dict):
            if isinstance(node.get("expr_str"), str):
                node["expr_str"] = f"Max(__import__('builtins').open({str(marker)!r}, 'w') and 1, 1) + {node['expr_str']}"
                return True
            return any(poison(v) for v in node.values())
        return isinstance(node, list) and any(poison(v) for v in node)

    def change(name, content):
        if not name.endswith("models/model.json"):
            return content
        program = json.loads(content)
        assert poison(program)
        return json.dumps(program).encode()
    return change


def _evil_member(marker: Path):
    change = lambda name, content: content  # noqa: E731
    import pickle
    change.extra = {"archive/data/extra.pkl": pickle.dumps(Payload(marker))}
    return change


@pytest.mark.parametrize("evil", [_evil_sample_inputs, _evil_guard, _evil_shape, _evil_member],
                         ids=["pickled-sample-inputs", "guards-code", "shape-expression", "pickle-member"])
def test_a_pt2_that_would_run_code_is_refused_and_nothing_runs(exported, tmp_path, evil):
    from sentiment.inference.exported import load_exported

    marker = tmp_path / "pwned"
    model = hostile_copy(exported["torch"], tmp_path / "evil.pt2", rewritten_pt2(exported["torch"], evil(marker)))
    one_line_error(*run("predict", "--model", model, "great film"), "evil.pt2", "refused")
    assert not marker.exists()
    with pytest.raises(SentimentError, match="refused"):  # what `serve --model` loads with
        load_exported(model)
    assert not marker.exists()
    code, text = run("predict", "--model", exported["torch"], "--json", "great film")  # the genuine file loads
    assert code == 0 and '"label"' in text, text


def test_an_onnx_model_with_external_data_is_refused(exported, tmp_path):
    import onnx
    from onnx.external_data_helper import set_external_data

    proto = onnx.load_model(str(exported["onnx"]))
    tensor = proto.graph.initializer[0]
    set_external_data(tensor, location="../../../etc/hostname", offset=0, length=4)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    model = hostile_copy(exported["onnx"], tmp_path / "external.onnx", proto.SerializeToString())
    one_line_error(*run("predict", "--model", model, "great film"), "external.onnx", "external files")


def test_a_genuine_pt2_whose_raw_weights_start_like_a_pickle_loads(tmp_path):
    """Raw tensor bytes (use_pickle false) are read with frombuffer, never unpickled: a float whose first byte is
    0x80, pickle's opening byte, is data (1 weight file in 256 begins so), not a reason to refuse a real export."""
    import struct

    import torch

    from sentiment.inference.export import export_model
    from sentiment.inference.exported import load_exported
    from sentiment.model import SentimentRNN

    from sentiment.ngrams import NgramBranch, NgramSpec

    torch.manual_seed(0)
    branch = NgramBranch(NgramSpec(2, 64, True), 1, "tfidf")  # the branch alone: no recurrent scan to export (fast)
    model = SentimentRNN(30, 8, rnn="none", ngrams=branch).eval()
    with torch.no_grad():
        branch.bias.fill_(struct.unpack("<f", b"\x80\x00\x80\x3f")[0])  # stored little-endian: 80 00 80 3f
    out = tmp_path / "m.pt2"
    export_model(model, out, "torch", {"labels": ["negative", "positive"]})
    assert load_exported(out) is not None
