"""Shared test constants and helpers: the one micro CLIP architecture every fast test builds."""

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image

from hf_tbar.models.tiny_clip import TinyCLIPConfig

#: A 1-layer, width-32 CLIP on 32 px images: built offline in milliseconds.
MICRO = TinyCLIPConfig(
    vision_layers=1,
    text_layers=1,
    vision_width=32,
    text_width=32,
    vision_heads=2,
    text_heads=2,
    projection_dim=16,
)


def write_imagefolder(
    root: Path, classes: tuple[str, ...] | list[str], per_class: int, image: Callable[[str, int], Image.Image]
) -> Path:
    """An ``imagefolder`` layout: one folder per class of ``per_class`` PNG files ``image(class, index)``."""
    for name in classes:
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            image(name, index).save(root / name / f"{name}_{index}.png")
    return root


def read_only_folder(tmp_path: Path) -> Path:
    """A folder in which nothing can be created (skips the test when there is none to be had)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    # root ignores permission bits: use a file system that refuses new folders, if there is one.
    for candidate in (Path("/sys"), Path("/proc")):
        try:
            Path(os.path.join(candidate, ".hf_tbar-probe")).mkdir()
        except OSError:
            return candidate
        Path(os.path.join(candidate, ".hf_tbar-probe")).rmdir()
    pytest.skip("running as root with no read-only location to write to")


@contextlib.contextmanager
def full_folder(tmp_path: Path, size: str = "64k") -> Iterator[Path]:
    """A real file system of ``size`` (a tmpfs mounted under ``tmp_path``): writes beyond it fail with
    ENOSPC, as on a full disk. Skips the test where mounting is not allowed (not root, no tmpfs)."""
    folder = tmp_path / "full-disk"
    folder.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
