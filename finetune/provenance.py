"""Where a run's inputs came from, for its record: digests of the data files (or the Hub data set's
revision) and of the weights (or the Hub model's revision)."""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from finetune.cache import file_digest, folder_digest

# what transformers' and peft's loaders read from a model folder: weights (shards and their index), configs,
# vocabularies; not a Trainer's optimizer, scheduler or RNG state saved beside them
LOADED = ("*.safetensors", "pytorch_model*.bin", "adapter_model.bin", "*config.json", "*.index.json",
          "tokenizer*", "vocab*", "merges.txt", "*.model", "special_tokens_map.json", "added_tokens.json")
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
        files[split] = {"file": str(path), "digest": _readable(file_digest if path.is_file() else folder_digest, path)}
    return {"files": files}


def _readable(hashing: Any, path: Path) -> str:
    """The digest, or why there is none: a file that cannot be read is recorded, it does not fail the run."""
    try:
        return hashing(path)
    except OSError as error:
        return f"unreadable ({error.strerror or error})"


def _cached_revision(loaded: dict[str, Any]) -> str | None:
    """The Hub commit the datasets cache holds the data set at (a 40-hex folder of its cache path)."""
    for dataset in loaded.values():
        for cache_file in getattr(dataset, "cache_files", []) or []:
            for part in Path(cache_file.get("filename", "")).parts:
                if COMMIT.match(part):
                    return part
    return None


def weights_provenance(source: str, config: Any) -> dict[str, Any]:
    """The weights' source; the digests of the files a local folder's loaders read (see LOADED), or
    a Hub model's commit (transformers keeps it on the config it loaded)."""
    found: dict[str, Any] = {"source": source, "revision": getattr(config, "_commit_hash", None)}
    directory = Path(source)
    if directory.is_dir():
        loaded = sorted(path for path in directory.iterdir()
                        if path.is_file() and any(fnmatch(path.name, pattern) for pattern in LOADED))
        found["files"] = {path.name: _readable(file_digest, path) for path in loaded}
    return found
