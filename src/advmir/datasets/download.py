"""Fetch, verify and safely extract the remote files of a dataset.

The shared machinery of every real dataset (the mirdata pattern): a dataset module lists its
:class:`RemoteFile` s, and :func:`fetch` and :func:`extract` do the rest:

- downloads resume: bytes land in ``<raw>/<name>.part`` and an interrupted run continues with an
  HTTP ``Range`` request;
- nothing is used before its checksum (md5 or sha256) is verified; a mismatch keeps the bytes in
  the ``.part`` file and says what to do;
- a verified file gets a marker (``<raw>/.verified/<name>.json``: size, mtime, digests), so it is
  neither downloaded nor hashed again;
- archives (tar, tar.gz, zip) are extracted into a temporary folder and renamed when whole; an
  absolute path, a ``..`` entry or a link that leaves the folder stops the extraction;
- where a source has moved or needs a login, the error names where to get the file and the
  folder to put it in (``--manual-dir`` or the raw folder).

No function here touches the network except :func:`download_to_part`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import posixpath
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from advmir.datasets.contract import DatasetError
from advmir.errors import InputError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
USER_AGENT = "advmir-dataset-download/0.1 (+https://github.com/; research workflow)"
MARKER_DIR = ".verified"
EXTRACTED_MARKER = ".advmir-extracted.json"
RECORDED_CHECKSUMS = "checksums-recorded.json"
ALGORITHMS = ("md5", "sha256")


class DownloadError(InputError, RuntimeError):
    """A remote file could not be fetched, verified or extracted; the message says what to do."""


class ChecksumError(DownloadError):
    """A file's digest differs from the published (or pinned, or recorded) one."""


class UnsafeArchiveError(DownloadError):
    """An archive entry would land outside the extraction folder."""


class ArchiveError(DownloadError):
    """An archive is truncated, corrupt or of an unknown format."""


@dataclass(frozen=True)
class RemoteFile:
    """One file a dataset needs.

    Args:
        filename: name on disk (in the raw folder or the manual folder).
        url: published address.
        checksums: accepted digests as ``"md5:<hex>"`` or ``"sha256:<hex>"``; a file passes when
            one of them matches.
        unpublished_copies: True when the usual copy (e.g. a mirror) has no published digest, so a
            file matching none of ``checksums`` is not proof of damage; it is then accepted only
            with a pinned digest or with ``allow_unpublished`` (trust on first download).
        size: size in bytes when published (checked before hashing), else None.
        extract: extract this archive (tar, tar.gz, zip) after verification.
        manual: where to get the file by hand when ``url`` fails (moved source, login needed).
    """

    filename: str
    url: str
    checksums: tuple[str, ...] = ()
    unpublished_copies: bool = False
    size: int | None = None
    extract: bool = True
    manual: str = ""

    def __post_init__(self) -> None:
        for entry in self.checksums:
            parse_checksum(entry)
        if "/" in self.filename or self.filename in {"", ".", ".."}:
            raise ValueError(f"RemoteFile.filename must be a plain file name, got {self.filename!r}")


def parse_checksum(entry: str) -> tuple[str, str]:
    """``"md5:abc..."`` -> ``("md5", "abc...")``; raise DatasetError (a ValueError) on a bad entry."""
    algorithm, _, digest = entry.partition(":")
    lengths = {"md5": 32, "sha256": 64}
    digest = digest.strip().lower()
    if algorithm not in lengths or len(digest) != lengths[algorithm] or not _is_hex(digest):
        raise DatasetError(
            f"checksum {entry!r} is not of the form md5:<32 hex digits> or sha256:<64 hex digits>"
        )
    return algorithm, digest


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def file_digests(path: Path, desc: str | None = None) -> dict[str, str]:
    """md5 and sha256 of a file in one streaming pass."""
    hashers = {name: hashlib.new(name) for name in ALGORITHMS}
    total = path.stat().st_size
    with open(path, "rb") as handle, _progress(total, desc or f"hash {path.name}") as bar:
        while chunk := handle.read(CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
            bar.update(len(chunk))
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _progress(total: int | None, desc: str) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=None,
        mininterval=2.0,
        leave=False,
    )


# ---------------------------------------------------------------------------------------------
# verification


@dataclass(frozen=True)
class Policy:
    """How to judge a file's digest.

    Args:
        pinned: the user's own digest for this file (config ``checksums``); replaces the published ones.
        allow_unpublished: accept and record the digest of a file that has no published digest.
        section: the dataset's config section (``esc50``), named in the advice of a mismatch.
    """

    pinned: str | None = None
    allow_unpublished: bool = False
    section: str = ""


def _marker_path(raw_dir: Path, filename: str) -> Path:
    return raw_dir / MARKER_DIR / f"{filename}.json"


def read_marker(raw_dir: Path, path: Path) -> dict[str, Any] | None:
    """The verification marker of ``path`` if it still describes the file on disk, else None."""
    marker = _marker_path(raw_dir, path.name)
    if not marker.exists() or not path.exists():
        return None
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    st = path.stat()
    fresh = (
        info.get("path") == str(path.resolve())
        and info.get("size") == st.st_size
        and info.get("mtime_ns") == st.st_mtime_ns
    )
    return info if fresh else None


def _write_marker(raw_dir: Path, path: Path, digests: dict[str, str], how: str, source: str) -> dict:
    st = path.stat()
    info = {
        "filename": path.name,
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        **digests,
        "verified_by": how,
        "source": source,
        "verified_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    marker = _marker_path(raw_dir, path.name)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, marker)
    return info


def _recorded(raw_dir: Path) -> dict[str, str]:
    path = raw_dir / RECORDED_CHECKSUMS
    return json.loads(path.read_text()) if path.exists() else {}


def _record(raw_dir: Path, filename: str, entry: str) -> None:
    records = _recorded(raw_dir)
    records[filename] = entry
    tmp = raw_dir / (RECORDED_CHECKSUMS + ".tmp")
    tmp.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, raw_dir / RECORDED_CHECKSUMS)


def verify(path: Path, remote: RemoteFile, raw_dir: Path, policy: Policy, source: str) -> dict[str, Any]:
    """Check ``path`` against the pinned, published or recorded digest; write its marker.

    Returns the marker (digests and how the file was verified). Raises ChecksumError naming both
    digests and what to do; the file itself is left where it is.
    """
    marker = read_marker(raw_dir, path)
    if marker is not None:
        log.info("%s: already verified (%s)", path.name, marker["verified_by"])
        return marker
    if remote.size is not None and path.stat().st_size != remote.size:
        raise ChecksumError(
            f"{path} has {path.stat().st_size} bytes but the published size is {remote.size}. "
            + _mismatch_advice(path, remote)
        )
    digests = file_digests(path)
    recorded = _recorded(raw_dir).get(remote.filename)
    kind: Literal["published", "pinned", "recorded"]
    if policy.pinned:
        expected, how, kind = [policy.pinned], "pinned checksum (config `checksums`)", "pinned"
    elif recorded:
        expected, how = [recorded], f"checksum recorded on first download ({raw_dir / RECORDED_CHECKSUMS})"
        kind = "recorded"
    else:
        expected, how, kind = list(remote.checksums), "published checksum", "published"
    for entry in expected:
        algorithm, digest = parse_checksum(entry)
        if digests[algorithm] == digest:
            log.info("%s: %s %s matches the %s", path.name, algorithm, digest, how)
            return _write_marker(raw_dir, path, digests, f"{how}: {algorithm}", source)
    if not expected or (remote.unpublished_copies and not policy.pinned and not recorded):
        if policy.allow_unpublished:
            entry = f"sha256:{digests['sha256']}"
            log.warning(
                "%s: no published checksum for this copy; recording %s in %s (trust on first "
                "download). Cite this digest with your results.",
                path.name,
                entry,
                raw_dir / RECORDED_CHECKSUMS,
            )
            _record(raw_dir, remote.filename, entry)
            return _write_marker(raw_dir, path, digests, "trust on first download: sha256", source)
        known = f" Digests published for other copies: {', '.join(remote.checksums)}." if expected else ""
        raise ChecksumError(
            f"{path.name} (sha256:{digests['sha256']}, md5:{digests['md5']}) matches no published "
            f"checksum.{known} Check the file against a digest you trust and pin it in the config "
            f"({_pin_line(remote, policy, digests['sha256'])}), or set `allow_unpublished_checksums: true` "
            "to accept it and record its sha256 for every later run."
        )
    raise ChecksumError(
        f"checksum mismatch for {path.name}: expected {' or '.join(expected)} ({how}), got "
        f"sha256:{digests['sha256']} / md5:{digests['md5']} ({path.stat().st_size} bytes). "
        + _changed_advice(path, remote, raw_dir, policy, kind, digests["sha256"], source)
    )


def _pin_line(remote: RemoteFile, policy: Policy, sha256: str) -> str:
    """The config lines that pin ``sha256`` for ``remote``."""
    pin = f"checksums: {{{remote.filename}: 'sha256:{sha256}'}}"
    return f"`{policy.section}: {{{pin}}}`" if policy.section else f"`{pin}` in the dataset's config section"


def _changed_advice(
    path: Path,
    remote: RemoteFile,
    raw_dir: Path,
    policy: Policy,
    kind: Literal["published", "pinned", "recorded"],
    sha256: str,
    source: str,
) -> str:
    """What a digest mismatch means and what to do, by where the expected digest came from:
    ``published`` (the dataset module's), ``pinned`` (the config's) or ``recorded`` (trust on first
    download). ``source`` says where the copy came from (a URL, the raw or the manual folder)."""
    pin = _pin_line(remote, policy, sha256)
    if kind == "recorded":
        records = raw_dir / RECORDED_CHECKSUMS
        what = (
            "The file changed upstream since its first download, or this copy is damaged; results made "
            "before came from the recorded copy."
        )
        accept = (
            f'check it, then delete the "{remote.filename}" entry from {records} (the next run records '
            f"the new digest) or pin it with {pin}"
        )
    elif kind == "pinned":
        what = "This copy is not the one you pinned: the file changed upstream, or this copy is damaged."
        accept = f"check it and replace your pin by {pin}"
    else:
        what = (
            f"This copy (from {source}) is not the file whose digest is published here: the file changed "
            "upstream (hosts rebuild archives they generate, GitHub among them, so the bytes can change "
            "while the files inside do not) or this copy is damaged."
        )
        accept = f"check it (e.g. against a copy you trust) and pin it with {pin}"
    if path.name.endswith(".part"):
        return (
            f"{what} Nothing was extracted; the bytes are kept in {path} so that a download cut short "
            f"resumes on the next run. If the download is complete, to accept this copy {accept}, then "
            f"run again (it is not downloaded again); or delete {path} to download afresh."
        )
    return (
        f"{what} Nothing was extracted and {path} is left untouched. To accept this copy {accept}, then "
        f"run again; or replace it with an intact copy (from {remote.url}"
        f"{'; ' + remote.manual if remote.manual else ''}) or delete it."
    )


def _mismatch_advice(path: Path, remote: RemoteFile) -> str:
    if path.name.endswith(".part"):
        return (
            f"Nothing was extracted; the bytes are kept in {path} so that a download cut short "
            "resumes on the next run. If the size is already complete, the source has changed or "
            f"is damaged: delete {path} to download afresh, and check {remote.url}."
        )
    return (
        f"Nothing was extracted and {path} is left untouched: replace it with an intact copy "
        f"(from {remote.url}{'; ' + remote.manual if remote.manual else ''}) or delete it."
    )


# ---------------------------------------------------------------------------------------------
# download


def download_to_part(url: str, part: Path, timeout: float = 60.0) -> None:
    """Download ``url`` into ``part``, resuming from its current size with an HTTP Range request.

    Raises DownloadError when the connection fails or ends early; the bytes received so far stay
    in ``part`` for the next attempt.
    """
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            total = _total_from_content_range(exc.headers.get("Content-Range"))
            if total == have:
                log.info("%s: already complete (%d bytes)", part.name, have)
                return
            log.warning("%s: server refused to resume at byte %d; starting again", part.name, have)
            part.unlink()
            return download_to_part(url, part, timeout)
        raise DownloadError(f"could not fetch {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"could not fetch {url}: {reason}") from exc

    with response:
        status = response.status
        if have and status == 206:
            start = _start_from_content_range(response.headers.get("Content-Range"))
            if start != have:
                raise DownloadError(
                    f"{url} answered a resume at byte {have} with bytes from {start}; delete {part} "
                    "and run again"
                )
            total = _total_from_content_range(response.headers.get("Content-Range"))
            mode = "ab"
            log.info("%s: resuming at byte %d of %s", part.name, have, total or "?")
        else:
            if have:
                log.warning("%s: the server ignores Range requests; downloading from the start", part.name)
            have = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        received = have
        try:
            with open(part, mode) as handle, _progress(total, f"download {part.name}") as bar:
                bar.update(have)
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(
                f"download of {url} stopped at {received} of {total or '?'} bytes ({exc!r}). "
                f"The bytes so far are kept in {part}: run the same command again to resume."
            ) from exc
    if total is not None and received < total:
        raise DownloadError(
            f"download of {url} ended early at {received} of {total} bytes (connection closed). "
            f"The bytes so far are kept in {part}: run the same command again to resume."
        )


def _start_from_content_range(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value or not value.startswith("bytes "):
        return None
    span = value[6:].split("/")[0]
    return int(span.split("-")[0]) if span[:1].isdigit() else None


def _total_from_content_range(value: str | None) -> int | None:
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def remote_url(remote: RemoteFile, base_url: str | None) -> str:
    """The published URL, or ``base_url/<filename>`` when a mirror (or a test server) is given."""
    if base_url:
        return f"{base_url.rstrip('/')}/{remote.filename}"
    return remote.url


def fetch(
    remote: RemoteFile,
    raw_dir: str | os.PathLike,
    *,
    base_url: str | None = None,
    manual_dir: str | os.PathLike | None = None,
    policy: Policy = Policy(),
    timeout: float = 60.0,
) -> Path:
    """A verified local copy of ``remote``: from the manual folder, the raw folder, or downloaded.

    Order: ``manual_dir/<filename>`` (used in place), then ``raw_dir/<filename>`` (verified
    before), then a (resumed) download to ``raw_dir/<filename>.part``, renamed only once verified.
    """
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    if manual_dir is not None:
        manual = Path(manual_dir) / remote.filename
        if manual.is_file():
            log.info("%s: using the copy in the manual folder %s", remote.filename, manual.parent)
            verify(manual, remote, raw_dir, policy, source=f"manual: {manual}")
            return manual
    final = raw_dir / remote.filename
    if final.is_file():
        verify(final, remote, raw_dir, policy, source=f"raw folder: {final}")
        return final
    part = raw_dir / (remote.filename + ".part")
    url = remote_url(remote, base_url)
    try:
        download_to_part(url, part, timeout=timeout)
    except DownloadError as exc:
        if part.exists() and part.stat().st_size:
            raise  # interrupted mid-way: resuming is the advice
        raise DownloadError(f"{exc}. {manual_advice(remote, raw_dir, manual_dir)}") from exc
    marker = verify(part, remote, raw_dir, policy, source=url)
    os.replace(part, final)
    # the marker describes the file by path: re-point it at the final name
    _marker_path(raw_dir, part.name).unlink(missing_ok=True)
    _write_marker(raw_dir, final, {k: marker[k] for k in ALGORITHMS}, marker["verified_by"], marker["source"])
    return final


def manual_advice(remote: RemoteFile, raw_dir: Path, manual_dir: str | os.PathLike | None) -> str:
    """Where to get ``remote`` by hand and where to put it."""
    where = remote.manual or f"download {remote.url} with a browser or another machine"
    folders = f"{raw_dir}/" + (f" or {manual_dir}/" if manual_dir else " (or a folder given as --manual-dir)")
    return (
        f"To proceed without this download: {where}; put the file, named {remote.filename}, in "
        f"{folders} and run again. It is verified before use."
    )


# ---------------------------------------------------------------------------------------------
# extraction


def archive_stem(filename: str) -> str:
    """Folder name of an archive: ``nsynth-test.jsonwav.tar.gz`` -> ``nsynth-test.jsonwav``."""
    for suffix in (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip"):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename + ".d"


def extract(archive: str | os.PathLike, dest: str | os.PathLike, digest: str | None = None) -> Path:
    """Extract a tar or zip archive into ``dest`` safely and atomically, once.

    Entries with an absolute path or ``..``, links whose target leaves ``dest``, and entries that
    pass through a link are refused (UnsafeArchiveError) before anything is written outside a
    temporary folder; a truncated or corrupt archive raises ArchiveError. ``dest`` appears only
    when the whole archive was extracted; a marker inside (with ``digest``, the archive's sha256)
    makes a second call a no-op.
    """
    archive, dest = Path(archive), Path(dest)
    marker = dest / EXTRACTED_MARKER
    if marker.exists():
        info = json.loads(marker.read_text())
        if digest is None or info.get("sha256") == digest:
            log.info("%s: already extracted in %s", archive.name, dest)
            return dest
    tmp = dest.with_name(f".{dest.name}.extracting")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            count = _extract_zip(archive, tmp)
        else:
            count = _extract_tar(archive, tmp)
        (tmp / EXTRACTED_MARKER).write_text(
            json.dumps({"archive": archive.name, "sha256": digest, "entries": count}, indent=2) + "\n"
        )
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("%s: extracted %d entries into %s", archive.name, count, dest)
    return dest


def _safe_name(name: str, archive: Path) -> str:
    """Normalised relative path of an entry; UnsafeArchiveError if absolute or escaping."""
    clean = name.replace("\\", "/")
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":"):
        raise UnsafeArchiveError(
            f"{archive.name}: entry {name!r} has an absolute path; refusing to extract this archive. "
            "It was not extracted; delete it and get an intact copy."
        )
    norm = posixpath.normpath(clean)
    if norm == ".." or norm.startswith("../") or ".." in clean.split("/"):
        raise UnsafeArchiveError(
            f"{archive.name}: entry {name!r} contains '..' (path traversal); refusing to extract "
            "this archive. It was not extracted; delete it and get an intact copy."
        )
    return norm


def _check_link(name: str, target: str, kind: str, archive: Path) -> None:
    """A link's target, resolved inside the archive, must stay inside the extraction folder."""
    base = posixpath.dirname(name) if kind == "symlink" else ""
    clean = target.replace("\\", "/")
    resolved = posixpath.normpath(posixpath.join(base, clean))
    if clean.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(
            f"{archive.name}: {kind} {name!r} -> {target!r} points outside the extraction folder; "
            "refusing to extract this archive. It was not extracted; delete it and get an intact copy."
        )


def _through_link(name: str, links: set[str], archive: Path) -> None:
    parts = name.split("/")
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in links:
            raise UnsafeArchiveError(
                f"{archive.name}: entry {name!r} is written through the link {'/'.join(parts[:i])!r}; "
                "refusing to extract this archive."
            )


def _corrupt(archive: Path, exc: BaseException) -> ArchiveError:
    return ArchiveError(
        f"{archive.name} is truncated or corrupt ({type(exc).__name__}: {exc}); nothing was "
        f"extracted. Delete {archive} and run again to download it afresh; if its checksum was "
        "verified, the published file itself is damaged: report it to the dataset's maintainers."
    )


def _extract_tar(archive: Path, tmp: Path) -> int:
    links: set[str] = set()
    count = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = _safe_name(member.name, archive)
                _through_link(name, links, archive)
                if member.issym() or member.islnk():
                    _check_link(name, member.linkname, "symlink" if member.issym() else "hardlink", archive)
                    links.add(name)
                elif not (member.isfile() or member.isdir()):
                    log.warning("%s: skipping special entry %r", archive.name, member.name)
                    continue
                try:
                    tar.extract(member, tmp, filter="data")
                except tarfile.FilterError as exc:
                    raise UnsafeArchiveError(
                        f"{archive.name}: entry {member.name!r} refused by the tar safety filter ({exc}); "
                        "refusing to extract this archive."
                    ) from exc
                count += 1
    except (tarfile.ReadError, EOFError, zlib.error) as exc:
        raise _corrupt(archive, exc) from exc
    except OSError as exc:  # gzip.BadGzipFile and friends
        raise _corrupt(archive, exc) from exc
    if count == 0:
        raise ArchiveError(f"{archive.name} holds no entries; delete it and download it again")
    return count


def _extract_zip(archive: Path, tmp: Path) -> int:
    count = 0
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:  # check every entry before writing any
                name = _safe_name(info.filename, archive)
                if stat.S_ISLNK(info.external_attr >> 16):
                    _check_link(name, zf.read(info).decode("utf-8", "replace"), "symlink", archive)
            for info in infos:
                if stat.S_ISLNK(info.external_attr >> 16):
                    log.warning("%s: link %r extracted as a plain file", archive.name, info.filename)
                zf.extract(info, tmp)
                count += 1
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise _corrupt(archive, exc) from exc
    return count
