"""Small file helpers that work for local paths (and NFS) and for URIs (``s3://``, ``gs://``)
through pyarrow, the filesystem layer Ray Tune itself uses for ``storage_path``."""
from __future__ import annotations

import json
import os
from typing import Any, List, Optional, Tuple

from lci.outputs import atomic_open


def is_uri(path: str) -> bool:
    return "://" in path


def _fs(path: str) -> Tuple[Any, str]:
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path)


def exists(path: str) -> bool:
    if not is_uri(path):
        return os.path.exists(path)
    import pyarrow.fs

    fs, p = _fs(path)
    return fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound


class TornFile(ValueError):
    """A file that exists but does not hold what it should: empty, cut short by a crash or a
    full disk, or not text. Readers decide what that means (a trial not started yet, or an
    error naming the file)."""

    def __init__(self, path: str, why: str):
        super().__init__(f"{path}: {why}")
        self.path, self.why = path, why


def read_text(path: str) -> Optional[str]:
    """The file's text, or None when it does not exist; :class:`TornFile` when it is not
    UTF-8 text (a file overwritten with bytes, or cut inside a character)."""
    try:
        if not is_uri(path):
            if not os.path.isfile(path):
                return None
            with open(path, "rb") as fh:
                return fh.read().decode()
        if not exists(path):
            return None
        fs, p = _fs(path)
        with fs.open_input_stream(p) as fh:
            return fh.read().decode()
    except UnicodeDecodeError as e:
        raise TornFile(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None


def write_text(path: str, text: str) -> None:
    """Write atomically where the filesystem allows (local: temp file + rename)."""
    if not is_uri(path):
        with atomic_open(path) as fh:  # a full disk or an interrupt keeps the old file
            fh.write(text)
        return
    fs, p = _fs(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as fh:
        fh.write(text.encode())


def read_json(path: str) -> Optional[Any]:
    """The file's JSON, or None when it does not exist; :class:`TornFile` when it exists but
    is empty or not valid JSON."""
    text = read_text(path)
    if text is None:
        return None
    if not text.strip():
        raise TornFile(path, "empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TornFile(path, f"not valid JSON ({e.msg} at line {e.lineno})") from None


def write_json(path: str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def listdir(path: str) -> List[str]:
    """Names of the sub-folders of ``path`` (empty when it does not exist)."""
    if not is_uri(path):
        if not os.path.isdir(path):
            return []
        return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    import pyarrow.fs

    fs, p = _fs(path)
    if fs.get_file_info(p).type == pyarrow.fs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pyarrow.fs.FileSelector(p, recursive=False))
    return sorted(i.base_name for i in infos if i.type == pyarrow.fs.FileType.Directory)


def remove_tree(path: str) -> None:
    if not is_uri(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    fs, p = _fs(path)
    fs.delete_dir(p)


def join(base: str, *parts: str) -> str:
    if is_uri(base):
        return "/".join([base.rstrip("/")] + list(parts))
    return os.path.join(base, *parts)
