"""Images on the data side: an image folder read as splits, and image references (paths, or a Hub
image's bytes) checked and opened."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from datasets import Dataset
from PIL import Image, UnidentifiedImageError

from finetune.errors import UserError


def folder_layout(directory: Path, splits: list[str], image_column: str, label_column: str) -> dict[str, Dataset] | None:
    """`directory/<split>/<class>/<image>` (the layout of `datasets`' imagefolder), or, with no split
    folders and no split files, `directory/<class>/<image>` as the training split; None where neither."""
    found = {split: directory / split for split in splits if (directory / split).is_dir()}
    if splits[0] in found:
        return {split: _class_folders(path, image_column, label_column) for split, path in found.items()}
    if not any(directory.glob(f"{splits[0]}.*")) and _subfolders(directory):
        return {splits[0]: _class_folders(directory, image_column, label_column)}
    return None


def _subfolders(directory: Path) -> list[Path]:
    return sorted(child for child in directory.iterdir() if child.is_dir() and not child.name.startswith("."))


def _class_folders(directory: Path, image_column: str, label_column: str) -> Dataset:
    """One row per file of each class folder (hidden files aside): its absolute path and the folder's name."""
    classes = _subfolders(directory)
    if not classes:
        raise UserError(f"dataset.path: '{directory}' has no class folders (one folder of images per class)")
    paths, labels = [], []
    for folder in classes:
        files = sorted(path for path in folder.rglob("*") if path.is_file() and not path.name.startswith("."))
        if not files:
            raise UserError(f"dataset.path: the class folder '{folder}' has no images")
        paths += [str(path.resolve()) for path in files]
        labels += [folder.name] * len(files)
    return Dataset.from_dict({image_column: paths, label_column: labels})


def checked_image(reference: Any) -> Any:
    """`reference` once it is known to open as an image: a path must name an image file (only its
    header is read); a Hub image ({bytes, path}) is taken as it is."""
    if isinstance(reference, str):
        path = Path(reference)
        if not path.is_file():
            raise UserError(f"{reference}: no such image file")
        try:
            with Image.open(path):
                pass
        except (UnidentifiedImageError, OSError) as error:
            raise UserError(f"{reference}: not an image ({str(error).splitlines()[0]})") from None
    return reference


def open_image(reference: Any) -> Image.Image:
    """The RGB image a reference names: a path, or a Hub image's {bytes, path}."""
    if isinstance(reference, dict):
        source = io.BytesIO(reference["bytes"]) if reference.get("bytes") else reference["path"]
    else:
        source = reference
    with Image.open(source) as image:
        return image.convert("RGB")


def pixel_values(image_processor: Any, references: list[Any]) -> Any:
    """The images a batch of references names, as the model's image processor prepares them."""
    images = [open_image(reference) for reference in references]
    return image_processor(images=images, return_tensors="pt")["pixel_values"]


def images_digest(references: list[Any]) -> str:
    """A digest of the images referred to: each file's path, size and modification time, or a Hub
    image's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    for reference in references:
        if isinstance(reference, dict) and reference.get("bytes"):
            digest.update(reference["bytes"])
        else:
            path = reference["path"] if isinstance(reference, dict) else reference
            status = Path(path).stat()
            digest.update(f"{path}\0{status.st_size}\0{status.st_mtime_ns}\0".encode())
    return digest.hexdigest()
