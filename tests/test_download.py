"""sentiment.data.download against a real HTTP server on 127.0.0.1 serving tiny archives built here."""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sentiment.data import download as dl
from sentiment.errors import SentimentError

REVIEWS = {
    "train/pos/0_9.txt": "A wonderful film.",
    "train/pos/1_8.txt": "Great acting and a clever plot.",
    "train/neg/0_2.txt": "Dull and far too long.",
    "train/neg/1_1.txt": "The worst thing I have seen.",
    "train/unsup/0_0.txt": "I watched it on a Tuesday.",
    "test/pos/0_10.txt": "Loved every minute.",
    "test/neg/0_3.txt": "Not worth the ticket.",
}


def _noise(n_words: int) -> str:
    # Incompressible-ish text so the archives are big enough to cut in the middle.
    rng = random.Random(0)
    return " ".join("".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=6)) for _ in range(n_words))


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path.read_bytes()


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def imdb_members() -> list[tuple[tarfile.TarInfo, bytes]]:
    members = [file_member(f"aclImdb/{name}", text.encode()) for name, text in REVIEWS.items()]
    members.append(file_member("aclImdb/train/pos/2_7.txt", _noise(8000).encode()))
    return members


def glove_lines(dim: int, words=("the", "film", "good", "bad")) -> str:
    return "".join(f"{w} " + " ".join(f"{(i + j) / 100:.5f}" for j in range(dim)) + "\n" for i, w in enumerate(words))


def make_glove_zip(path: Path, dims=(50,)) -> bytes:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for dim in dims:
            zf.writestr(f"glove.6B.{dim}d.txt", glove_lines(dim) + _noise(3000) + " 0.1\n")
    return path.read_bytes()


class Server:
    """What the handler serves and how it misbehaves; requests records (path, Range header)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.status: int | None = None  # answer every request with this error
        self.cut_after: int | None = None  # send only this many body bytes, then drop the connection
        self.cuts_left = 1  # ... on this many requests
        self.ignore_range = False  # answer 200 with the whole file even to a Range request
        self.port = 0

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        srv: Server = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        data = srv.files.get(self.path.lstrip("/"))
        if srv.status or data is None:
            self.send_error(srv.status or 404)
            return
        start = 0
        if rng and not srv.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng)[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None and srv.cuts_left > 0:
            srv.cuts_left -= 1
            body = body[: srv.cut_after]  # Content-Length promised more: the client sees a drop
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_WAIT", 0.0)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server():
    state = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.state = state  # type: ignore[attr-defined]
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def archives(tmp_path):
    """A good IMDB tar.gz and GloVe zip, with their digests."""
    src = tmp_path / "src"
    src.mkdir()
    imdb = make_tar(src / "aclImdb_v1.tar.gz", imdb_members())
    glove = make_glove_zip(src / "glove.6B.zip")
    return {
        "imdb_path": src / "aclImdb_v1.tar.gz",
        "imdb": imdb,
        "imdb_sha": hashlib.sha256(imdb).hexdigest(),
        "glove_path": src / "glove.6B.zip",
        "glove": glove,
        "glove_sha": hashlib.sha256(glove).hexdigest(),
        "glove_md5": hashlib.md5(glove).hexdigest(),
    }


@pytest.fixture
def official(monkeypatch, server, archives):
    """Point the official URLs and pins at the local server."""
    server.files["aclImdb_v1.tar.gz"] = archives["imdb"]
    server.files["glove.6B.zip"] = archives["glove"]
    monkeypatch.setattr(dl, "IMDB_URL", server.url("aclImdb_v1.tar.gz"))
    monkeypatch.setattr(dl, "IMDB_SIZE", len(archives["imdb"]))
    monkeypatch.setattr(dl, "IMDB_SHA256", archives["imdb_sha"])
    monkeypatch.setattr(dl, "GLOVE_URLS", (server.url("glove.6B.zip"),))
    monkeypatch.setattr(dl, "GLOVE_MD5", archives["glove_md5"])
    return server


def manifest(data_dir: Path) -> dict:
    path = data_dir / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def leftovers(data_dir: Path) -> list[str]:
    """Temp dirs, .part files and other droppings a finished call must not leave behind."""
    return sorted(p.name for p in data_dir.rglob("*") if p.name.startswith(".") or p.suffix == ".part")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- downloads from the official URLs


def test_download_extracts_and_records_manifest(tmp_path, official, archives):
    data_dir = tmp_path / "data"
    calls = []
    imdb = dl.download_imdb(data_dir, progress=lambda *a: calls.append(a))
    glove = dl.download_glove(data_dir, 50)

    assert (imdb.status, imdb.path, imdb.sha256) == ("downloaded", data_dir / "aclImdb", archives["imdb_sha"])
    for name, text in REVIEWS.items():
        assert (data_dir / "aclImdb" / name).read_text() == text
    assert (data_dir / "downloads" / "aclImdb_v1.tar.gz").read_bytes() == archives["imdb"]  # kept
    assert glove.status == "downloaded" and glove.path == data_dir / "glove" / "glove.6B.50d.txt"
    assert glove.path.read_text().startswith(glove_lines(50))
    assert sorted(p.name for p in (data_dir / "glove").iterdir()) == ["glove.6B.50d.txt"]

    entries = manifest(data_dir)
    assert entries["imdb"]["sha256"] == archives["imdb_sha"]
    assert entries["imdb"]["size"] == len(archives["imdb"])
    assert entries["imdb"]["source"] == official.url("aclImdb_v1.tar.gz")
    assert entries["glove.6B.50d"]["sha256"] == archives["glove_sha"]
    assert entries["glove.6B.50d"]["source"] == official.url("glove.6B.zip")
    assert leftovers(data_dir) == []
    total = len(archives["imdb"])
    assert ("downloading aclImdb_v1.tar.gz", total, total) in calls
    assert any(c[0].startswith("extracting") for c in calls)


def test_second_call_is_already_present_without_http(tmp_path, official):
    data_dir = tmp_path / "data"
    dl.download_imdb(data_dir)
    dl.download_glove(data_dir, 50)
    before = (data_dir / "manifest.json").read_bytes()
    official.requests.clear()

    imdb = dl.download_imdb(data_dir)
    glove = dl.download_glove(data_dir, 50)

    assert imdb.status == glove.status == "already present"
    assert official.requests == []
    assert (data_dir / "manifest.json").read_bytes() == before


def test_force_reinstalls(tmp_path, official):
    data_dir = tmp_path / "data"
    dl.download_imdb(data_dir)
    (data_dir / "aclImdb" / "stray.txt").write_text("x")
    assert dl.download_imdb(data_dir, force=True).status == "downloaded"
    assert not (data_dir / "aclImdb" / "stray.txt").exists()
    assert leftovers(data_dir) == []


def test_other_glove_dim_reuses_kept_zip(tmp_path, official, monkeypatch):
    data = make_glove_zip(tmp_path / "two.zip", dims=(50, 100))
    official.files["glove.6B.zip"] = data
    monkeypatch.setattr(dl, "GLOVE_MD5", hashlib.md5(data).hexdigest())
    data_dir = tmp_path / "data"
    dl.download_glove(data_dir, 50)
    official.requests.clear()
    assert dl.download_glove(data_dir, 100).status == "downloaded"
    assert official.requests == []
    assert sorted(manifest(data_dir)) == ["glove.6B.100d", "glove.6B.50d"]


# ---------------------------------------------------------------- resume, restart, retries


def test_resume_after_connection_cut(tmp_path, server, archives):
    data = archives["imdb"]
    server.files["a.tar.gz"] = data
    server.cut_after = len(data) // 2
    dest = tmp_path / "a.tar.gz"
    calls = []

    sha = dl.fetch_url(server.url("a.tar.gz"), dest, progress=lambda *a: calls.append(a))

    assert dest.read_bytes() == data
    assert sha == archives["imdb_sha"]  # covers the bytes of both attempts
    assert [r for _, r in server.requests] == [None, f"bytes={len(data) // 2}-"]
    assert ("downloading a.tar.gz", len(data) // 2, len(data)) in calls
    assert calls[-1][1:] == (len(data), len(data))
    assert not dest.with_name("a.tar.gz.part").exists()


def test_resume_part_left_by_earlier_run(tmp_path, server, archives):
    data = archives["imdb"]
    server.files["a.tar.gz"] = data
    dest = tmp_path / "a.tar.gz"
    dest.with_name("a.tar.gz.part").write_bytes(data[:1000])

    assert dl.fetch_url(server.url("a.tar.gz"), dest) == archives["imdb_sha"]
    assert dest.read_bytes() == data
    assert server.requests == [("/a.tar.gz", "bytes=1000-")]


def test_restart_when_server_ignores_range(tmp_path, server, archives):
    data = archives["imdb"]
    server.files["a.tar.gz"] = data
    server.cut_after = len(data) // 3
    server.ignore_range = True
    dest = tmp_path / "a.tar.gz"

    assert dl.fetch_url(server.url("a.tar.gz"), dest) == archives["imdb_sha"]
    assert dest.read_bytes() == data  # not the first third twice
    assert [r for _, r in server.requests] == [None, f"bytes={len(data) // 3}-"]


def test_gives_up_after_retries_and_keeps_part(tmp_path, server, archives):
    data = archives["imdb"]
    server.files["a.tar.gz"] = data
    server.cut_after, server.cuts_left = 100, 99
    dest = tmp_path / "a.tar.gz"

    with pytest.raises(SentimentError, match="kept dropping"):
        dl.fetch_url(server.url("a.tar.gz"), dest, retries=2)
    assert len(server.requests) == 3
    assert not dest.exists()
    assert dest.with_name("a.tar.gz.part").read_bytes() == data[:300]  # the next run resumes here


# ---------------------------------------------------------------- failures


def test_checksum_mismatch_deletes_download(tmp_path, server, archives):
    server.files["imdb.tar.gz"] = archives["imdb"]
    data_dir = tmp_path / "data"

    with pytest.raises(SentimentError) as err:
        dl.download_imdb(data_dir, server.url("imdb.tar.gz"), sha256="0" * 64)

    assert "0" * 64 in str(err.value) and archives["imdb_sha"] in str(err.value)
    assert "imdb.tar.gz" in str(err.value)
    assert list((data_dir / "downloads").iterdir()) == []
    assert not (data_dir / "aclImdb").exists()
    assert "imdb" not in manifest(data_dir)


def test_pinned_md5_mismatch_on_every_glove_url(tmp_path, official, monkeypatch):
    urls = (official.url("glove.6B.zip"), official.url("mirror/glove.6B.zip"))
    official.files["mirror/glove.6B.zip"] = official.files["glove.6B.zip"]
    monkeypatch.setattr(dl, "GLOVE_URLS", urls)
    monkeypatch.setattr(dl, "GLOVE_MD5", "f" * 32)
    data_dir = tmp_path / "data"

    with pytest.raises(SentimentError) as err:
        dl.download_glove(data_dir, 50)

    msg = str(err.value)
    assert "md5" in msg and "f" * 32 in msg and urls[0] in msg and urls[1] in msg
    assert "--glove-source" in msg
    assert not (data_dir / "glove" / "glove.6B.50d.txt").exists()
    assert list((data_dir / "downloads").iterdir()) == []
    assert manifest(data_dir) == {}


def test_glove_falls_back_to_mirror(tmp_path, official, monkeypatch):
    mirror = official.url("mirror/glove.6B.zip")
    official.files["mirror/glove.6B.zip"] = official.files["glove.6B.zip"]
    monkeypatch.setattr(dl, "GLOVE_URLS", (official.url("gone/glove.6B.zip"), mirror))

    result = dl.download_glove(tmp_path / "data", 50)

    assert (result.status, result.source) == ("downloaded", mirror)
    assert [p for p, _ in official.requests] == ["/gone/glove.6B.zip", "/mirror/glove.6B.zip"]


def test_http_404_names_url_and_flag(tmp_path, official):
    official.status = 404
    with pytest.raises(SentimentError) as err:
        dl.download_imdb(tmp_path / "data")
    msg = str(err.value)
    assert official.url("aclImdb_v1.tar.gz") in msg and "404" in msg
    assert "--imdb-source" in msg and dl.IMDB_SOURCE_ENV in msg
    assert "\n" not in msg


def test_all_glove_urls_failing_names_each(tmp_path, official, monkeypatch):
    official.status = 404
    urls = (official.url("a/glove.6B.zip"), official.url("b/glove.6B.zip"))
    monkeypatch.setattr(dl, "GLOVE_URLS", urls)
    with pytest.raises(SentimentError) as err:
        dl.download_glove(tmp_path / "data", 50)
    assert urls[0] in str(err.value) and urls[1] in str(err.value) and "--glove-source" in str(err.value)


def test_unreachable_host(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/aclImdb_v1.tar.gz"
    with pytest.raises(SentimentError, match="could not download .*refused") as err:
        dl.download_imdb(tmp_path / "data", url)
    assert url in str(err.value)


def test_missing_local_source(tmp_path):
    with pytest.raises(SentimentError, match="--imdb-source .* does not exist"):
        dl.download_imdb(tmp_path / "data", str(tmp_path / "nope.tar.gz"))


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize(
    "bad",
    [
        lambda tmp: file_member("aclImdb/../../evil.txt", b"x"),
        lambda tmp: file_member(str(tmp / "evil.txt"), b"x"),  # absolute
        lambda tmp: _link("aclImdb/evil.txt", str(tmp / "secret.txt")),
        lambda tmp: _link("aclImdb/evil.txt", "aclImdb/train/pos/0_9.txt", tarfile.LNKTYPE),
        lambda tmp: _link("aclImdb/evil.txt", "", tarfile.FIFOTYPE),
    ],
    ids=["dotdot", "absolute", "symlink", "hardlink", "fifo"],
)
def test_unsafe_tar_member_extracts_nothing(tmp_path, bad):
    (tmp_path / "secret.txt").write_text("secret")
    info, data = bad(tmp_path)
    # The bad member comes last: the safe ones before it must not be extracted either.
    archive = tmp_path / "bad.tar.gz"
    make_tar(archive, imdb_members() + [(info, data)])
    target = tmp_path / "target"

    with pytest.raises(SentimentError, match=re.escape(repr(info.name))):
        dl.safe_extract_tar(archive, target)
    assert not target.exists()
    assert not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar.gz", "secret.txt"]

    data_dir = tmp_path / "data"
    with pytest.raises(SentimentError, match="unsafe member"):
        dl.download_imdb(data_dir, str(archive))
    assert sorted(p.name for p in data_dir.iterdir()) == []


def test_unsafe_zip_member(tmp_path):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("glove.6B.50d.txt", glove_lines(50))
        zf.writestr("../evil.txt", "x")
    with pytest.raises(SentimentError, match="'../evil.txt'"):
        dl.extract_zip_member(archive, "glove.6B.50d.txt", tmp_path / "out" / "glove.6B.50d.txt")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.txt").exists()

    link = zipfile.ZipInfo("glove.6B.50d.txt")
    link.external_attr = (0o120777 << 16)  # a unix symlink entry
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(SentimentError, match="symlink"):
        dl.extract_zip_member(archive, "glove.6B.50d.txt", tmp_path / "out" / "glove.6B.50d.txt")
    assert not (tmp_path / "out").exists()


def test_truncated_local_tar_is_refused_but_kept(tmp_path, archives):
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(archives["imdb"][: len(archives["imdb"]) * 2 // 3])
    data_dir = tmp_path / "data"

    with pytest.raises(SentimentError, match="truncated or corrupt"):
        dl.download_imdb(data_dir, str(archive))
    assert archive.exists()  # the user's file, not ours to delete
    assert not (data_dir / "aclImdb").exists() and manifest(data_dir) == {}
    assert leftovers(data_dir) == []


def test_truncated_download_is_deleted(tmp_path, server, archives):
    server.files["cut.tar.gz"] = archives["imdb"][:-200]  # complete transfer of a broken file
    data_dir = tmp_path / "data"
    with pytest.raises(SentimentError, match="truncated or corrupt.*download-data again"):
        dl.download_imdb(data_dir, server.url("cut.tar.gz"))
    assert list((data_dir / "downloads").iterdir()) == []
    assert not (data_dir / "aclImdb").exists() and manifest(data_dir) == {}


def test_corrupt_glove_zip(tmp_path, archives):
    archive = tmp_path / "glove.6B.zip"
    archive.write_bytes(archives["glove"][:-100])  # loses the central directory
    with pytest.raises(SentimentError, match="truncated or corrupt"):
        dl.download_glove(tmp_path / "data", 50, str(archive))


def test_glove_dim_missing_lists_available(tmp_path, archives):
    data_dir = tmp_path / "data"
    with pytest.raises(SentimentError) as err:
        dl.download_glove(data_dir, 100, str(archives["glove_path"]))
    assert "no 100d vectors (it has: 50d)" in str(err.value) and "--glove-dim 50" in str(err.value)
    assert not (data_dir / "glove" / "glove.6B.100d.txt").exists()


def test_glove_txt_of_other_dim_is_refused(tmp_path):
    txt = tmp_path / "glove.6B.100d.txt"
    txt.write_text(glove_lines(50))  # named 100d, holds 50d: the content decides
    with pytest.raises(SentimentError, match="holds 50d vectors, not 100d"):
        dl.download_glove(tmp_path / "data", 100, str(txt))


# ---------------------------------------------------------------- local sources


def _extracted(tmp_path: Path, archives) -> Path:
    with tarfile.open(archives["imdb_path"]) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    return tmp_path / "unpacked"


@pytest.mark.parametrize("form", ["path", "file_url", "parent_dir", "aclImdb_dir"])
def test_imdb_local_sources(tmp_path, archives, form):
    if form == "path":
        source = str(archives["imdb_path"])
    elif form == "file_url":
        source = archives["imdb_path"].as_uri()
    elif form == "parent_dir":
        source = str(_extracted(tmp_path, archives))
    else:
        source = str(_extracted(tmp_path, archives) / "aclImdb")
    data_dir = tmp_path / "data"

    result = dl.download_imdb(data_dir, source)

    assert result.status == "installed from local source"
    assert (data_dir / "aclImdb" / "test" / "neg" / "0_3.txt").read_text() == REVIEWS["test/neg/0_3.txt"]
    assert not (data_dir / "downloads").exists()  # local archives are read in place
    entry = manifest(data_dir)["imdb"]
    if form in ("path", "file_url"):
        assert entry["sha256"] == result.sha256 == archives["imdb_sha"]
        assert entry["source"] == str(archives["imdb_path"])
        assert not (data_dir / "aclImdb").is_symlink()
    else:
        assert (data_dir / "aclImdb").is_symlink()
        assert (data_dir / "aclImdb").resolve() == (tmp_path / "unpacked" / "aclImdb").resolve()
        assert entry["sha256"] is None
    assert dl.download_imdb(data_dir, source).status == "already present"


def test_local_sha256_is_verified(tmp_path, archives):
    data_dir = tmp_path / "data"
    with pytest.raises(SentimentError, match="wrong sha256"):
        dl.download_imdb(data_dir, str(archives["imdb_path"]), sha256="1" * 64)
    assert archives["imdb_path"].exists() and manifest(data_dir) == {}
    ok = dl.download_imdb(data_dir, str(archives["imdb_path"]), sha256=archives["imdb_sha"].upper())
    assert ok.status == "installed from local source"


def test_incomplete_imdb_dir_is_refused(tmp_path):
    root = tmp_path / "partial" / "aclImdb"
    (root / "train" / "pos").mkdir(parents=True)
    (root / "train" / "pos" / "0_9.txt").write_text("good")
    (root / "train" / "neg").mkdir()
    (root / "test" / "pos").mkdir(parents=True)
    (root / "test" / "pos" / "0_9.txt").write_text("good")
    data_dir = tmp_path / "data"

    with pytest.raises(SentimentError) as err:
        dl.download_imdb(data_dir, str(tmp_path / "partial"))

    msg = str(err.value)
    assert "train/neg/*.txt" in msg and "test/neg/" in msg
    assert "train/pos" not in msg and "test/pos" not in msg
    assert not (data_dir / "aclImdb").exists() and manifest(data_dir) == {}


@pytest.mark.parametrize("form", ["zip", "file_url", "txt", "dir"])
def test_glove_local_sources(tmp_path, archives, form):
    txt_dir = tmp_path / "vectors"
    txt_dir.mkdir()
    (txt_dir / "glove.6B.50d.txt").write_text(glove_lines(50))
    source = {
        "zip": str(archives["glove_path"]),
        "file_url": archives["glove_path"].as_uri(),
        "txt": str(txt_dir / "glove.6B.50d.txt"),
        "dir": str(txt_dir),
    }[form]
    data_dir = tmp_path / "data"

    result = dl.download_glove(data_dir, 50, source)

    expected = archives["glove_path"] if form in ("zip", "file_url") else txt_dir / "glove.6B.50d.txt"
    assert result.status == "installed from local source"
    assert result.sha256 == hashlib.sha256(expected.read_bytes()).hexdigest()
    assert result.path.read_text().startswith(glove_lines(50))
    assert manifest(data_dir)["glove.6B.50d"]["source"] == str(expected)
    assert (txt_dir / "glove.6B.50d.txt").exists() and archives["glove_path"].exists()
    assert leftovers(data_dir) == []


def test_glove_dir_without_requested_dim(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "glove.6B.50d.txt").write_text(glove_lines(50))
    with pytest.raises(SentimentError, match=r"no 300d vectors \(it has: 50d\)"):
        dl.download_glove(tmp_path / "data", 300, str(tmp_path / "v"))


# ---------------------------------------------------------------- what a killed extraction leaves
def test_the_next_run_removes_what_a_run_killed_mid_extraction_left(tmp_path, archives):
    import os
    import subprocess
    import sys

    data_dir = tmp_path / "data"
    # a run killed (SIGKILL: no finally, no atexit) while it extracts
    killed = ("import os, signal, sys\n"
              "from sentiment.data import download as dl\n"
              "def progress(what, done, total):\n"
              "    if what.startswith('extracting'):\n"
              "        os.kill(os.getpid(), signal.SIGKILL)\n"
              "dl.download_imdb(sys.argv[1], sys.argv[2], progress=progress)\n")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", killed, str(data_dir), str(archives["imdb_path"])], env=env)
    assert result.returncode == -9
    [stale] = [p for p in data_dir.iterdir() if p.name.startswith(".aclImdb-extract-")]
    assert (stale / "aclImdb").is_dir()

    # left alone: a live process's extraction, another machine's, an older version's, a file, a lookalike
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        keep = [data_dir / f".aclImdb-extract-{dl._host()}-{sleeper.pid}-abc123",
                data_dir / ".aclImdb-extract-otherhost-999999-abc123",
                data_dir / ".aclImdb-k2j4_x9q", data_dir / "aclImdb-extract-notours"]
        for path in keep:
            path.mkdir()
        (data_dir / f".aclImdb-extract-{dl._host()}-999999-file").write_text("a file, not our directory")
        result = dl.download_imdb(data_dir, str(archives["imdb_path"]))
        assert result.status == "installed from local source" and (data_dir / "aclImdb" / "train").is_dir()
        assert not stale.exists()
        assert all(path.is_dir() for path in keep)
        assert (data_dir / f".aclImdb-extract-{dl._host()}-999999-file").is_file()
    finally:
        sleeper.kill()
        sleeper.wait()
