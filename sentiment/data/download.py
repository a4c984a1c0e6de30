"""Fetch IMDB and GloVe into a data directory: resumable downloads, checksums, safe extraction.

Layout of data_dir:
    aclImdb/                  extracted IMDB (or a symlink to an extracted copy elsewhere)
    glove/glove.6B.{dim}d.txt only the requested dimension
    downloads/                downloaded archives (kept, so another GloVe dim needs no download)
                              and *.part files that the next run resumes
    manifest.json             one entry per complete item, written (atomically) only once the item is
                              fully in place: an entry is the marker that it is complete

Library code: nothing here prints or exits. Failures a user can fix are SentimentError with a
one-line message; progress goes through the caller's callback.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import json
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable, Iterator

from sentiment import __version__
from sentiment.atomic import atomic_write_text
from sentiment.errors import SentimentError

IMDB_URL = "http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_SIZE = 84125825
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"

# The second URL is a mirror, tried only when the first fails.
GLOVE_URLS = (
    "https://nlp.stanford.edu/data/glove.6B.zip",
    "https://huggingface.co/stanfordnlp/glove/resolve/main/glove.6B.zip",
)
GLOVE_MD5 = "056ea991adb4740ac6bf1b6d9b50408b"
GLOVE_DIMS = (50, 100, 200, 300)

IMDB_SOURCE_ENV = "SENTIMENT_IMDB_SOURCE"
GLOVE_SOURCE_ENV = "SENTIMENT_GLOVE_SOURCE"

MANIFEST_NAME = "manifest.json"
IMDB_SPLITS = ("train/pos", "train/neg", "test/pos", "test/neg")

RETRY_WAIT = 1.0  # seconds before the first retry, doubled after each; tests set it to 0
_CHUNK = 1 << 18
_IMDB_HINT = f"Use --imdb-source (or {IMDB_SOURCE_ENV}) to point at a local copy or mirror."
_GLOVE_HINT = f"Use --glove-source (or {GLOVE_SOURCE_ENV}) to point at a local copy or mirror."

ProgressCallback = Callable[[str, int, int | None], None]  # (description, bytes_done, bytes_total)


@dataclass
class FetchResult:
    name: str  # "imdb" or "glove.6B.50d"
    path: Path  # data_dir/aclImdb or data_dir/glove/glove.6B.50d.txt
    status: str  # "already present" | "downloaded" | "installed from local source"
    sha256: str | None
    source: str


class _DownloadError(SentimentError):
    """The server could not be reached or refused; callers add the --*-source hint."""


class _Interrupted(Exception):
    """The connection dropped mid-file; what arrived is on disk and the next attempt resumes."""


class _CorruptArchiveError(SentimentError):
    def __init__(self, archive: Path, error: BaseException):
        self.detail = _one_line(error)
        super().__init__(
            f"{archive} is truncated or corrupt ({self.detail}); "
            "delete it and run make download-data again."
        )


def _one_line(error: BaseException) -> str:
    """An exception's message on one line (tarfile lists each method it tried on a line of its own)."""
    return " ".join(str(error).split()) or type(error).__name__


_CORRUPT = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError, zipfile.BadZipFile)


# ---------------------------------------------------------------- public entry points


def download_imdb(
    data_dir: Path,
    source: str | None = None,
    *,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
    force: bool = False,
) -> FetchResult:
    """Put the IMDB reviews at data_dir/aclImdb from the official URL or `source`."""
    data_dir = Path(data_dir)
    final = data_dir / "aclImdb"
    _make_data_dir(data_dir)
    remove_stale_extractions(data_dir)
    if not force and (hit := _already_present(data_dir, "imdb", final)):
        return hit
    kind, where = ("url", IMDB_URL) if source is None else _classify(source, "--imdb-source")

    if kind == "dir":
        root = where / "aclImdb" if (where / "aclImdb").is_dir() else where
        _check_imdb_layout(root, str(where))
        root = root.resolve()
        _link_dir(root, final, data_dir, "imdb")
        return _record(data_dir, "imdb", final, "installed from local source", None, str(root), None)

    if kind == "url":
        archive = data_dir / "downloads" / _url_filename(str(where), "aclImdb_v1.tar.gz")
        want = sha256 or (IMDB_SHA256 if source is None else None)
        digest = _download(
            str(where), archive, {"sha256": want} if want else {},
            IMDB_SIZE if source is None else None, progress, _IMDB_HINT,
        )
        status, label, downloaded = "downloaded", str(where), True
    else:
        archive = where.resolve()
        digest = _hash_file(archive)["sha256"]
        _verify_local(archive, "sha256", sha256, digest, "--imdb-source")
        status, label, downloaded = "installed from local source", str(archive), False

    # Extract beside the final location and rename into place, so a killed run never leaves a
    # half-extracted aclImdb/ that looks usable (the next run removes what a killed one left: see above).
    tmp = Path(tempfile.mkdtemp(prefix=f"{_EXTRACT_PREFIX}{_host()}-{os.getpid()}-", dir=data_dir))
    try:
        with _corrupt_archive(archive, downloaded, "--imdb-source"):
            safe_extract_tar(archive, tmp, members_prefix="aclImdb", progress=progress)
        _check_imdb_layout(tmp / "aclImdb", archive.name)
        _forget(data_dir, "imdb")
        if final.is_symlink() or final.is_file():
            final.unlink()
        elif final.exists():
            final.rename(tmp / "old")  # deleted with tmp below
        (tmp / "aclImdb").rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _record(data_dir, "imdb", final, status, digest, label, archive.stat().st_size)


# An extraction's temporary directory: .aclImdb-extract-HOST-PID-RANDOM. A run killed mid-extraction (kill -9,
# power loss) leaves ~200 MB there; the next run removes the ones whose process is gone.
_EXTRACT_PREFIX = ".aclImdb-extract-"
_EXTRACT_NAME = re.compile(re.escape(_EXTRACT_PREFIX) + r"(?P<host>[A-Za-z0-9.]+)-(?P<pid>[0-9]+)-[a-z0-9_]+")


def _host() -> str:
    """This machine's name as it goes into a file name: a data directory on a shared disk is seen by other
    machines, whose process ids mean nothing here."""
    import socket

    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process (or a pid we cannot ask about): not ours to judge dead
    return True


def remove_stale_extractions(data_dir: Path) -> list[Path]:
    """Delete the extraction directories (named by download_imdb: _EXTRACT_PREFIX, this host, the owner's pid)
    whose owner process is gone; returns them. Anything else in data_dir is left alone: directories of another
    host, of a live process, or not named by this tool (older versions' `.aclImdb-XXXXXXXX` among them: this
    tool cannot tell whether an older version still runs)."""
    removed = []
    try:
        entries = list(os.scandir(data_dir))
    except OSError:
        return removed
    host = _host()
    for entry in entries:
        match = _EXTRACT_NAME.fullmatch(entry.name)
        if (match is None or match["host"] != host or int(match["pid"]) == os.getpid()
                or _process_alive(int(match["pid"])) or not entry.is_dir(follow_symlinks=False)):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def download_glove(
    data_dir: Path,
    dim: int = 50,
    source: str | None = None,
    *,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
    force: bool = False,
) -> FetchResult:
    """Put data_dir/glove/glove.6B.{dim}d.txt in place from the official zip or `source`."""
    data_dir = Path(data_dir)
    name = f"glove.6B.{dim}d"
    final = data_dir / "glove" / f"{name}.txt"
    _make_data_dir(data_dir)
    if not force and (hit := _already_present(data_dir, name, final)):
        return hit
    checks = {"sha256": sha256} if sha256 else {}

    if source is None:
        if dim not in GLOVE_DIMS:  # fail before an 822 MB download that cannot help
            raise SentimentError(
                f"GloVe 6B has {_dims_text(GLOVE_DIMS)} vectors, not {dim}d; pick --glove-dim from those."
            )
        archive = data_dir / "downloads" / "glove.6B.zip"
        failures = []
        for url in GLOVE_URLS:
            try:
                digest = _download(url, archive, {"md5": GLOVE_MD5, **checks}, None, progress, "")
                break
            except SentimentError as e:
                failures.append(str(e))
        else:
            raise SentimentError(f"{' '.join(failures)} {_GLOVE_HINT}")
        status, label, downloaded = "downloaded", url, True
    else:
        kind, where = _classify(source, "--glove-source")
        if kind == "url":
            archive = data_dir / "downloads" / _url_filename(str(where), "glove.6B.zip")
            digest = _download(str(where), archive, checks, None, progress, _GLOVE_HINT)
            status, label, downloaded = "downloaded", str(where), True
        else:
            archive = where / f"{name}.txt" if kind == "dir" else where
            if not archive.is_file():
                dims = _glove_dims([p.name for p in where.iterdir()])
                raise SentimentError(_no_dim_message(where, dim, dims))
            archive = archive.resolve()
            digest = _hash_file(archive)["sha256"]
            _verify_local(archive, "sha256", sha256, digest, "--glove-source")
            status, label, downloaded = "installed from local source", str(archive), False

    final.parent.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".txt":
        _install_vectors(archive, final, dim)
    else:
        with _corrupt_archive(archive, downloaded, "--glove-source"):
            with zipfile.ZipFile(archive) as zf:
                names = zf.namelist()
            member = next((n for n in names if PurePosixPath(n).name == final.name), None)
            if member is None:
                raise SentimentError(_no_dim_message(archive, dim, _glove_dims(names)))
            extract_zip_member(archive, member, final, progress=progress)
    return _record(data_dir, name, final, status, digest, label, archive.stat().st_size)


def read_manifest(data_dir: Path) -> dict:
    """What download_* put in place: {"imdb": {...}, "glove.6B.50d": {...}}; {} if nothing yet."""
    path = Path(data_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError) as e:
        raise SentimentError(f"{path} is not valid JSON ({e}); delete it and run make download-data again.")
    if not isinstance(manifest, dict):
        raise SentimentError(f"{path} is not a manifest; delete it and run make download-data again.")
    return manifest


# ---------------------------------------------------------------- downloading


def fetch_url(
    url: str,
    dest: Path,
    *,
    progress: ProgressCallback | None = None,
    expected_size: int | None = None,
    retries: int = 3,
    timeout: float = 30.0,
) -> str:
    """Download url to dest (via dest.part, resumable) and return the sha256 of the whole file."""
    return _fetch(url, Path(dest), progress, expected_size, retries, timeout)["sha256"]


def _fetch(
    url: str, dest: Path, progress: ProgressCallback | None, expected_size: int | None,
    retries: int, timeout: float,
) -> dict[str, str]:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(RETRY_WAIT * 2 ** (attempt - 1))
        try:
            digests = _fetch_once(url, part, progress, expected_size, timeout)
        except _Interrupted as e:
            last = e
            continue
        part.replace(dest)
        return digests
    raise _DownloadError(
        f"could not download {url}: the connection kept dropping ({last}), gave up after "
        f"{retries} retries; run again to resume from {part}."
    )


def _fetch_once(
    url: str, part: Path, progress: ProgressCallback | None, expected_size: int | None, timeout: float
) -> dict[str, str]:
    have = part.stat().st_size if part.exists() else 0
    if expected_size is not None and have > expected_size:
        part.unlink()
        have = 0
    if expected_size is not None and have == expected_size:
        return _hash_file(part, ("sha256", "md5"))  # complete already; only the rename was missed

    request = urllib.request.Request(url, headers={"User-Agent": f"sentiment/{__version__}"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and have:  # our .part does not fit the file the server has now
            part.unlink()
            raise _Interrupted("server refused to resume") from None
        raise _DownloadError(f"could not download {url}: HTTP {e.code} {e.reason}.") from None
    except (OSError, http.client.HTTPException) as e:  # URLError is an OSError
        raise _DownloadError(f"could not download {url}: {_reason(e)}.") from None

    hashers = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
    with response:
        resumed = have and response.status == 206
        if resumed:
            match = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
            if not match or int(match[1]) != have:
                part.unlink()
                raise _Interrupted("server resumed at the wrong offset")
            total = int(match[2]) if match[2] != "*" else None
            # The digest covers the whole file, so the bytes from the earlier attempt go in first.
            with open(part, "rb") as f:
                while chunk := f.read(1 << 20):
                    for h in hashers.values():
                        h.update(chunk)
        else:  # a 200 answer is the whole file again, whatever we asked for
            have = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if expected_size is not None and total is not None and total != expected_size:
            part.unlink(missing_ok=True)
            raise _DownloadError(
                f"could not download {url}: the server has {total} bytes, expected {expected_size}."
            )
        total = total if total is not None else expected_size
        done = have
        description = f"downloading {part.name.removesuffix('.part')}"
        with open(part, "ab" if resumed else "wb") as f:
            _report(progress, description, done, total)
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:  # reset, timeout, IncompleteRead
                    raise _Interrupted(_reason(e)) from e
                if not chunk:
                    break
                f.write(chunk)
                for h in hashers.values():
                    h.update(chunk)
                done += len(chunk)
                _report(progress, description, done, total)
    if total is not None and done < total:
        raise _Interrupted(f"got {done} of {total} bytes")
    if total is not None and done > total:
        part.unlink()
        raise _DownloadError(f"could not download {url}: got {done} bytes, expected {total}.")
    return {name: h.hexdigest() for name, h in hashers.items()}


def _download(
    url: str, dest: Path, checks: dict[str, str], expected_size: int | None,
    progress: ProgressCallback | None, hint: str,
) -> str:
    """fetch_url plus checksum checks; returns the sha256. A bad download is deleted."""
    if checks and dest.exists():
        # An archive kept from an earlier run is as good as a new one if it still verifies.
        digests = _hash_file(dest, ("sha256", "md5"))
        if all(digests[a] == want.lower() for a, want in checks.items()):
            return digests["sha256"]
        dest.unlink()
    try:
        digests = _fetch(url, dest, progress, expected_size, 3, 30.0)
    except _DownloadError as e:
        raise _DownloadError(f"{e} {hint}".strip()) from None
    for algo, want in checks.items():
        if digests[algo] != want.lower():
            dest.unlink(missing_ok=True)
            raise SentimentError(
                f"{dest.name} from {url} has the wrong {algo}: expected {want.lower()}, got "
                f"{digests[algo]}; deleted it. Run make download-data again. {hint}".strip()
            )
    return digests["sha256"]


# ---------------------------------------------------------------- extraction


def safe_extract_tar(
    archive: Path,
    target: Path,
    members_prefix: str | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> None:
    """Extract archive (optionally only members under members_prefix/) into target.

    Every member is checked before anything is written: one absolute path, '..', link or
    device refuses the whole archive.
    """
    archive, target = Path(archive), Path(target)
    root = os.path.abspath(target)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                if reason := _unsafe_name(member.name, root) or _unsafe_tar_type(member):
                    raise _unsafe(archive, member.name, reason)
            if members_prefix:
                top = members_prefix.strip("/")
                members = [m for m in members if PurePosixPath(m.name).parts[:1] == (top,)]
            target.mkdir(parents=True, exist_ok=True)
            total = sum(m.size for m in members)

            def reporting() -> Iterator[tarfile.TarInfo]:
                done = last = 0
                for member in members:
                    yield member
                    done += member.size
                    if done - last >= 1 << 20 or done == total:
                        _report(progress, f"extracting {archive.name}", done, total)
                        last = done

            # The data filter (3.11.4+) repeats the checks above inside tarfile itself.
            if hasattr(tarfile, "data_filter"):
                tar.extractall(target, members=reporting(), filter="data")
            else:
                tar.extractall(target, members=reporting())  # safe: every member was checked above
    except getattr(tarfile, "FilterError", ()) as e:
        raise _unsafe(archive, e.tarinfo.name, str(e)) from None
    except _CORRUPT as e:
        raise _CorruptArchiveError(archive, e) from None


def extract_zip_member(
    archive: Path, member: str, dest: Path, *, progress: ProgressCallback | None = None
) -> None:
    """Stream one member of a zip to the file dest (the 300d GloVe file is 1 GB: never in memory)."""
    archive, dest = Path(archive), Path(dest)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with zipfile.ZipFile(archive) as zf:
            root = os.path.abspath(dest.parent)
            for info in zf.infolist():
                if reason := _unsafe_name(info.filename, root) or _unsafe_zip_type(info):
                    raise _unsafe(archive, info.filename, reason)
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise SentimentError(f"{archive.name} has no member {member}; use another source.") from None
            dest.parent.mkdir(parents=True, exist_ok=True)
            done = 0
            with zf.open(info) as src, open(tmp, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
                    done += len(chunk)
                    _report(progress, f"extracting {dest.name}", done, info.file_size)
            os.replace(tmp, dest)
    except _CORRUPT as e:
        raise _CorruptArchiveError(archive, e) from None
    finally:
        tmp.unlink(missing_ok=True)


def _unsafe_name(name: str, root: str) -> str | None:
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        return "absolute path"
    if ".." in PureWindowsPath(name).parts:  # splits on both / and \
        return "'..' in path"
    if os.path.commonpath([root, os.path.normpath(os.path.join(root, name))]) != root:
        return "outside the target directory"
    return None


def _unsafe_tar_type(member: tarfile.TarInfo) -> str | None:
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.isdev():
        return "device or fifo"
    if not (member.isreg() or member.isdir()):
        return "not a regular file or directory"
    return None


def _unsafe_zip_type(info: zipfile.ZipInfo) -> str | None:
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip was not made on unix
    if kind == stat.S_IFLNK:
        return "symlink"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "not a regular file or directory"
    return None


def _unsafe(archive: Path, name: str, reason: str) -> SentimentError:
    return SentimentError(
        f"{archive.name} has an unsafe member {name!r} ({reason}); extracted nothing. "
        "Use a trusted copy of the archive."
    )


@contextlib.contextmanager
def _corrupt_archive(archive: Path, downloaded: bool, flag: str) -> Iterator[None]:
    """A corrupt download is deleted so the next run fetches it again; a user's own file is not ours to delete."""
    try:
        yield
    except (_CorruptArchiveError, *_CORRUPT) as e:
        detail = e.detail if isinstance(e, _CorruptArchiveError) else _one_line(e)
        if downloaded:
            archive.unlink(missing_ok=True)
            raise SentimentError(
                f"{archive.name} is truncated or corrupt ({detail}); "
                "deleted it, run make download-data again."
            ) from None
        raise SentimentError(
            f"{archive} is truncated or corrupt ({detail}); replace it with a complete copy "
            f"or use another {flag}."
        ) from None


# ---------------------------------------------------------------- local sources and bookkeeping


def _classify(source: str, flag: str) -> tuple[str, str | Path]:
    """("url", url) for http(s); ("dir" | "file", Path) for a local path or file:// URL."""
    parts = urllib.parse.urlsplit(source)
    if parts.scheme.lower() in ("http", "https"):
        return "url", source
    path = Path(urllib.request.url2pathname(parts.path)) if parts.scheme.lower() == "file" else Path(source)
    path = path.expanduser()
    if path.is_dir():
        return "dir", path
    if path.is_file():
        return "file", path
    raise SentimentError(
        f"{flag} {source} does not exist; give an http(s)/file:// URL, an archive or an extracted directory."
    )


def _check_imdb_layout(root: Path, label: str) -> None:
    missing = []
    for split in IMDB_SPLITS:
        folder = root / split
        if not folder.is_dir():
            missing.append(f"{split}/")
        elif next(folder.glob("*.txt"), None) is None:
            missing.append(f"{split}/*.txt")
    if missing:
        raise SentimentError(
            f"{label} is not a complete IMDB copy: missing aclImdb/{', aclImdb/'.join(missing)}. "
            "Point --imdb-source at aclImdb_v1.tar.gz or its extracted aclImdb directory."
        )


def _link_dir(target: Path, final: Path, data_dir: Path, name: str) -> None:
    """Make final a symlink to target (already resolved), replacing whatever was there."""
    if final.exists() and final.resolve() == target:
        return  # the user pointed at the copy already in data_dir
    _forget(data_dir, name)
    link = final.with_name(f".{final.name}.link")
    link.unlink(missing_ok=True)
    link.symlink_to(target, target_is_directory=True)
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)  # rename(2) cannot put a link over a directory
    os.replace(link, final)


def _install_vectors(src: Path, final: Path, dim: int) -> None:
    with open(src, "rb") as f:
        width = len(f.readline(1 << 20).split()) - 1
    if width != dim:
        what = f"{width}d vectors, not {dim}d" if width > 0 else f"no {dim}d vectors"
        hint = f"pick --glove-dim {width} or another source" if width > 0 else "use another source"
        raise SentimentError(f"{src} holds {what}; {hint}.")
    if final.exists() and os.path.samefile(src, final):
        return
    tmp = final.with_name(f".{final.name}.part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)  # same filesystem: no second copy of up to 1 GB
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, final)


def _glove_dims(names: list[str]) -> list[int]:
    found = (re.fullmatch(r"glove\.6B\.(\d+)d\.txt", PurePosixPath(n).name) for n in names)
    return sorted({int(m[1]) for m in found if m})


def _no_dim_message(where: Path, dim: int, dims: list[int]) -> str:
    if not dims:
        return (
            f"{where.name} has no glove.6B.*d.txt vectors; "
            "point --glove-source at glove.6B.zip or one of its .txt files."
        )
    return (
        f"{where.name} has no {dim}d vectors (it has: {_dims_text(dims)}). "
        f"Pick --glove-dim {dims[0]} or another source."
    )


def _dims_text(dims: tuple[int, ...] | list[int]) -> str:
    return ", ".join(f"{d}d" for d in dims)


def _verify_local(path: Path, algo: str, want: str | None, got: str, flag: str) -> None:
    if want and want.lower() != got:
        raise SentimentError(
            f"{path} has the wrong {algo}: expected {want.lower()}, got {got}; "
            f"use the right file or another {flag}."
        )


def _make_data_dir(data_dir: Path) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise SentimentError(f"data directory {data_dir} is a file; use another --data-dir.")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SentimentError(f"cannot create data directory {data_dir}: {e.strerror or e}.") from None


def _already_present(data_dir: Path, name: str, path: Path) -> FetchResult | None:
    entry = read_manifest(data_dir).get(name)
    if isinstance(entry, dict) and path.exists():
        return FetchResult(name, path, "already present", entry.get("sha256"), entry.get("source", ""))
    return None


def _record(
    data_dir: Path, name: str, path: Path, status: str, sha256: str | None, source: str, size: int | None
) -> FetchResult:
    manifest = read_manifest(data_dir)
    manifest[name] = {
        "path": path.relative_to(data_dir).as_posix(),
        "source": source,
        "sha256": sha256,
        "size": size,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_manifest(data_dir, manifest)
    return FetchResult(name, path, status, sha256, source)


def _forget(data_dir: Path, name: str) -> None:
    """Drop an entry before its files are replaced, so a crash midway reads as not installed."""
    manifest = read_manifest(data_dir)
    if manifest.pop(name, None) is not None:
        _write_manifest(data_dir, manifest)


def _write_manifest(data_dir: Path, manifest: dict) -> None:
    atomic_write_text(data_dir / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _hash_file(path: Path, algos: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    hashers = {a: hashlib.new(a) for a in algos}
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _url_filename(url: str, default: str) -> str:
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return name if name not in ("", ".", "..") else default


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", error)  # URLError wraps the socket error
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _report(progress: ProgressCallback | None, description: str, done: int, total: int | None) -> None:
    if progress is not None:
        progress(description, done, total)
