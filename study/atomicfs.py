"""A local file system for Ray Tune whose every written file appears whole or not at all.

Tune writes its run state (``experiment_state-*.json``, ``search_gen_state-*.json``, the
searcher's pickle) and every trial's ``params.json`` by copying over the old file in place.
When the disk fills up half-way, those files are left cut short, and the run can no longer be
restored even after space is freed. Given to Tune as ``storage_filesystem`` for a local study
folder, this file system writes each file to a temporary name beside it and renames it over
the old one only once all of it is down, so a full disk (or a killed driver) leaves the
previous version: ``--resume`` continues from the last state saved whole, as after a killed
driver. Reads, listings and the rest go to pyarrow's ``LocalFileSystem`` unchanged.

It is picklable (Tune hands the storage to every trial worker, whose checkpoint uploads then
go through it too).
"""
from __future__ import annotations

import os
import threading
from typing import Any, Optional

import pyarrow
import pyarrow.fs as pafs


class _AtomicWriter:
    """A file object for ``pyarrow.PythonFile``: writes ``path`` via a temporary file, and on
    close either renames it into place (everything written) or removes it (a write failed)."""

    def __init__(self, path: str):
        self.path = path
        self.tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.part"
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._fh = open(self.tmp, "wb")
        self._failed = False
        self.closed = False

    def write(self, data) -> int:
        try:
            return self._fh.write(data)
        except BaseException:
            self._failed = True
            raise

    def flush(self) -> None:
        try:
            self._fh.flush()
        except BaseException:
            self._failed = True
            raise

    def tell(self) -> int:
        return self._fh.tell()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def __del__(self):
        # a stream dropped without close (its writer failed): never rename a partial file
        if not getattr(self, "closed", True):
            self._failed = True
            try:
                self.close()
            except OSError:
                pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if not self._failed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
        except OSError:
            self._failed = True
            raise
        finally:
            self._fh.close()
            if self._failed:
                try:
                    os.unlink(self.tmp)
                except OSError:
                    pass
            else:
                os.replace(self.tmp, self.path)


class AtomicLocalFS(pafs.FileSystemHandler):
    """pyarrow's local file system, with atomic whole-file writes (module docstring)."""

    def __init__(self):
        self._fs = pafs.LocalFileSystem()

    def __reduce__(self):
        return (AtomicLocalFS, ())

    # ---------------------------------------------------------------- what this changes
    def open_output_stream(self, path: str, metadata: Optional[Any] = None):
        return pyarrow.PythonFile(_AtomicWriter(path), mode="w")

    # ------------------------------------------------------------------ the rest, as is
    def get_type_name(self) -> str:
        return "lci-atomic-local"

    def normalize_path(self, path: str) -> str:
        return self._fs.normalize_path(path)

    def equals(self, other) -> bool:
        return isinstance(other, AtomicLocalFS)

    def get_file_info(self, paths):
        return self._fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self._fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of the root folder")

    def delete_file(self, path: str) -> None:
        self._fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self._fs.open_input_stream(src) as fin, self.open_output_stream(dest) as fout:
            while True:
                chunk = fin.read(1 << 20)
                if not chunk:
                    break
                fout.write(chunk)

    def open_input_stream(self, path: str):
        return self._fs.open_input_stream(path)

    def open_input_file(self, path: str):
        return self._fs.open_input_file(path)

    def open_append_stream(self, path: str, metadata: Optional[Any] = None):
        return self._fs.open_append_stream(path)


def atomic_local_filesystem() -> pafs.PyFileSystem:
    """The file system to pass as Tune's ``storage_filesystem`` for a local study folder."""
    return pafs.PyFileSystem(AtomicLocalFS())
