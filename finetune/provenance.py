"""Where a run's inputs came from, for its record: digests of the data files (or the Hub data set's
revision) and of the weights (or the Hub model's revision)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from finetune.cache import directory_digests, file_digest

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".model", ".txt")  # weights, configs, vocabularies
COMMIT = re.compile(r"^[0-9a-f]{40}$")


def data_provenance(sources: dict[str, Any], loaded: dict[str, Any], hub_id: str | None,
                    hub_config: str | None) -> dict[str, Any]:
    """Per split, the digest of the file it was read from (a split that is a folder: one digest of
    its files); for a Hub data set its id, config, the revision in the datasets cache and each
    split's datasets fingerprint."""
    if hub_id is not None:
        return {"hub_id": hub_id, "hub_config": hub_config, "revision": _cached_revision(loaded),
                "fingerprints": {split: getattr(dataset, "_fingerprint", None) for split, dataset in loaded.items()}}
    files = {}
    for split, source in sources.items():
        path = Path(source.file)
        files[split] = {"file": str(path), "digest": file_digest(path) if path.is_file() else _folder_digest(path)}
    return {"files": files}


def _folder_digest(directory: Path) -> str:
    listing = "".join(f"{name} {digest}\n" for name, digest in directory_digests(directory).items())
    return f"sha256:{hashlib.sha256(listing.encode()).hexdigest()}"


def _cached_revision(loaded: dict[str, Any]) -> str | None:
    """The Hub commit the datasets cache holds the data set at (a 40-hex folder of its cache path)."""
    for dataset in loaded.values():
        for cache_file in getattr(dataset, "cache_files", []) or []:
            for part in Path(cache_file.get("filename", "")).parts:
                if COMMIT.match(part):
                    return part
    return None


def weights_provenance(source: str, config: Any) -> dict[str, Any]:
    """The weights' source; a local folder's files by digest, a Hub model's commit (transformers
    keeps it on the config it loaded)."""
    found: dict[str, Any] = {"source": source, "revision": getattr(config, "_commit_hash", None)}
    directory = Path(source)
    if directory.is_dir():
        names = sorted(path.name for path in directory.iterdir() if path.is_file() and path.suffix in WEIGHT_SUFFIXES)
        found["files"] = directory_digests(directory, names)
    return found
