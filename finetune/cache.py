"""A disk cache for arrays computed from frozen weights: where it lives, the digests that key it,
and arrays written whole or not at all. The frozen-feature sets (finetune.frozen) and the SVM
baseline's embeddings (finetune.embeddings) live in it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch


def cache_root() -> Path:
    """$FINETUNE_CACHE, else ~/.cache/finetune: where frozen features (and the SVM's embeddings) live."""
    return Path(os.environ.get("FINETUNE_CACHE") or Path.home() / ".cache" / "finetune").expanduser()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def key_digest(key: dict[str, Any]) -> str:
    """A digest of a cache key, which must name every input of the computation."""
    return digest(json.dumps(key, sort_keys=True).encode())


def weights_digest(tensors: Iterable[torch.Tensor]) -> str:
    """A digest of the tensors' shapes, dtypes and values, in order."""
    hashed = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        hashed.update(f"{tuple(tensor.shape)} {tensor.dtype}".encode())
        hashed.update(tensor.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return hashed.hexdigest()


def token_ids_digest(rows: list[list[int]]) -> str:
    """A digest of tokenized rows (their lengths and ids)."""
    hashed = hashlib.blake2b(digest_size=16)
    hashed.update(np.array([len(ids) for ids in rows], dtype=np.int64).tobytes())
    hashed.update(np.array([token for ids in rows for token in ids], dtype=np.int64).tobytes())
    return hashed.hexdigest()


def cached_array(kind: str, key: dict[str, Any], compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """`compute()`, stored under cache_root()/kind by a digest of `key` (which must name every input
    of the computation) and read back by later calls; (the array, whether it was read back)."""
    path = cache_root() / kind / f"{key_digest(key)}.npy"
    try:
        return np.load(path), True
    except (OSError, ValueError):  # absent, or unreadable: computed again and replaced
        pass
    array = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.stem}.partial-{os.getpid()}.npy")
    np.save(temporary, array)
    os.replace(temporary, path)  # atomic: a reader sees the whole array or none
    return array, False


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, remembered in the cache by (path, size, modification time): a sweep's
    runs hash a model's weights once, where the cache is writable."""
    path = Path(path).resolve()
    status = path.stat()
    return _remembered({"path": str(path), "size": status.st_size, "mtime_ns": status.st_mtime_ns},
                       lambda: _sha256(path))


def folder_digest(directory: Path) -> str:
    """One sha256 over a folder's files (their relative paths and contents), remembered by the list of
    their paths, sizes and modification times: an image folder is one cache entry, not one per image."""
    directory = Path(directory).resolve()
    files = sorted(path for path in directory.rglob("*") if path.is_file())
    listing = [[str(path.relative_to(directory)), path.stat().st_size, path.stat().st_mtime_ns] for path in files]

    def compute() -> str:
        lines = "".join(f"{path.relative_to(directory)} {_sha256(path)}\n" for path in files)
        return f"sha256:{hashlib.sha256(lines.encode()).hexdigest()}"

    return _remembered({"folder": str(directory), "files": listing}, compute)


def _sha256(path: Path) -> str:
    hashed = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hashed.update(block)
    return f"sha256:{hashed.hexdigest()}"


def _remembered(key: dict[str, Any], compute: Callable[[], str]) -> str:
    """compute(), kept under cache_root()/digests by `key`; read back while the key holds."""
    remembered = cache_root() / "digests" / f"{key_digest(key)}.txt"
    try:
        return remembered.read_text().strip()
    except OSError:
        pass
    found = compute()
    try:
        remembered.parent.mkdir(parents=True, exist_ok=True)
        temporary = remembered.with_name(f"{remembered.stem}.partial-{os.getpid()}")
        temporary.write_text(found)
        os.replace(temporary, remembered)
    except OSError:  # a read-only cache costs the hashing next time, nothing else
        pass
    return found
