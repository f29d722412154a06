"""Fetching training structures: the reference's eight PDB entries (or any others) from RCSB,
validated by parsing before they are written, written atomically, never re-fetched.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import gemmi

from .structures import STRUCTURE_SUFFIXES, protein_from_structure

_LOG = logging.getLogger(__name__)

REFERENCE_PDB_IDS = ["1CRN", "1UBQ", "2GB1", "1L2Y", "1VII", "1ENH", "1BDD", "1PRB"]
RCSB_DOWNLOAD_URL = "https://files.rcsb.org/download"
_PDB_ID = re.compile(r"[A-Za-z0-9]{4}")


class DownloadError(RuntimeError):
    """A structure that could not be fetched; the message names the ID and the URL."""


def validate_pdb_id(pdb_id: str) -> str:
    """Upper-cased ID if it is exactly 4 letters/digits; anything else could escape data_dir."""
    if not isinstance(pdb_id, str) or not (pdb_id.isascii() and _PDB_ID.fullmatch(pdb_id)):
        raise ValueError(f"invalid PDB ID {pdb_id!r}: expected 4 letters or digits, e.g. 1UBQ")
    return pdb_id.upper()


def ensure_pdb_files(
    ids: Iterable[str],
    data_dir: str | os.PathLike,
    base_url: str = RCSB_DOWNLOAD_URL,
    timeout: float = 30,
    retries: int = 3,
    offline: bool = False,
    backoff: float = 0.5,
) -> list[Path]:
    """Path of a structure file per ID, downloading `{base_url}/{ID}.pdb` for those missing.

    A file already in `data_dir` (<ID> or <id> with any structure extension) is used as is.
    A download is parsed before it is written, and written atomically, so `data_dir` never
    holds a partial or unparsable file. `retries` is the number of extra attempts after a
    transient failure, waiting backoff, 2*backoff, ... seconds between them.
    """
    ids = [validate_pdb_id(i) for i in ids]
    data_dir = Path(data_dir)
    paths = {i: _existing_structure(data_dir, i) for i in ids}
    missing = [i for i in dict.fromkeys(ids) if paths[i] is None]
    if missing and offline:
        raise DownloadError(
            f"offline mode and {', '.join(missing)} not in {data_dir}. "
            + _manual_download_hint(missing, data_dir, base_url)
        )
    if missing:
        data_dir.mkdir(parents=True, exist_ok=True)
    for n, pdb_id in enumerate(missing):
        url = f"{base_url.rstrip('/')}/{pdb_id}.pdb"
        _LOG.info("downloading %s", url)
        try:
            body = _fetch(url, timeout, retries, backoff)
        except urllib.error.HTTPError as err:
            raise DownloadError(
                f"could not download {pdb_id}: {url} returned HTTP {err.code} {err.reason}"
            ) from err
        except _TransientError as err:
            raise DownloadError(
                f"could not download {pdb_id} from {url} "
                f"after {retries + 1} attempt{'s' if retries else ''} ({err}). "
                + _manual_download_hint(missing[n:], data_dir, base_url)
            ) from err
        _validate_download(body, pdb_id, url)
        paths[pdb_id] = data_dir / f"{pdb_id}.pdb"
        _write_atomically(paths[pdb_id], body)
    return [paths[i] for i in ids]


class _TransientError(Exception):
    """A failure worth retrying: no connection, timeout, truncated body, server error."""


def _existing_structure(data_dir: Path, pdb_id: str) -> Path | None:
    for stem in dict.fromkeys((pdb_id, pdb_id.lower())):
        for suffix in STRUCTURE_SUFFIXES:
            candidate = data_dir / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _manual_download_hint(ids, data_dir: Path, base_url: str) -> str:
    urls = " ".join(f"{base_url.rstrip('/')}/{i}.pdb" for i in ids)
    return (
        f"Without network access, download {urls} into {data_dir}/ yourself, "
        f"or pass --data-dir pointing to a directory with your own structure files."
    )


def _fetch(url: str, timeout: float, retries: int, backoff: float) -> bytes:
    """Body of `url`; a 4xx HTTPError is raised at once, transient failures after `retries`."""
    attempt = 0
    while True:
        try:
            return _fetch_once(url, timeout)
        except _TransientError:
            if attempt >= retries:
                raise
        time.sleep(backoff * 2**attempt)
        attempt += 1


def _fetch_once(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
            declared = response.headers.get("Content-Length")
    except urllib.error.HTTPError as err:
        if err.code < 500:  # 404 and friends will not change on a second try
            raise
        raise _TransientError(f"HTTP {err.code} {err.reason}") from err
    except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, IncompleteRead
        raise _TransientError(f"{type(err).__name__}: {err}") from err
    if declared is not None and declared.isdigit() and int(declared) != len(body):
        raise _TransientError(f"truncated: {len(body)} of {declared} bytes")
    return body


def _validate_download(body: bytes, pdb_id: str, url: str) -> None:
    """Parse the body as the training code will, so a bad download fails here and now."""
    try:
        structure = gemmi.read_structure_string(body, format=gemmi.CoorFormat.Pdb)
        protein_from_structure(structure, None, source=url, name=pdb_id)
    except (RuntimeError, ValueError) as err:  # gemmi errors and StructureError
        raise DownloadError(f"{pdb_id}: {url} did not return a usable PDB file: {err}") from err


def _write_atomically(path: Path, body: bytes) -> None:
    """Temp file in the same directory, then os.replace: readers see all of it or nothing."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
