"""Small file helpers that work for local paths (and NFS) and for URIs (``s3://``, ``gs://``)
through pyarrow, the filesystem layer Ray Tune itself uses for ``storage_path``."""
from __future__ import annotations

import json
import os
import threading
from typing import Any, List, Optional, Tuple


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


def read_text(path: str) -> Optional[str]:
    """The file's text, or None when it does not exist."""
    if not is_uri(path):
        if not os.path.isfile(path):
            return None
        with open(path) as fh:
            return fh.read()
    if not exists(path):
        return None
    fs, p = _fs(path)
    with fs.open_input_stream(p) as fh:
        return fh.read().decode()


def write_text(path: str, text: str) -> None:
    """Write atomically where the filesystem allows (local: temp file + rename)."""
    if not is_uri(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        # a name of its own per process and thread: two writers never share a temp file
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
        return
    fs, p = _fs(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as fh:
        fh.write(text.encode())


def read_json(path: str) -> Optional[Any]:
    text = read_text(path)
    return None if text is None else json.loads(text)


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
