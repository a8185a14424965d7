import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from hf_tbar.attacks import BlendImage, ImagePatch, build_trigger, trigger_from_dict
from hf_tbar.errors import ConfigError, InputError


def _png(path, rgba):
    PILImage.fromarray(np.asarray(rgba, dtype=np.uint8)).save(path)
    return str(path)


def _solid(path, size=4, colour=(255, 0, 0, 255)):
    return _png(path, np.broadcast_to(np.array(colour, dtype=np.uint8), (size, size, 4)))


def _zeros(size=32, batch=2):
    return torch.zeros(batch, 3, size, size)


def _stamped(out):
    """Mask (B, H, W) of the pixels a red patch changed on black images."""
    return out[:, 0] > 0


@pytest.mark.parametrize(
    "position, rows, cols",
    [
        ("bottom-right", slice(28, 32), slice(28, 32)),
        ("top-left", slice(0, 4), slice(0, 4)),
        ("top-right", slice(0, 4), slice(28, 32)),
        ("bottom-left", slice(28, 32), slice(0, 4)),
        ("center", slice(14, 18), slice(14, 18)),
        ((5, 7), slice(7, 11), slice(5, 9)),  # (x, y) of the top-left corner
    ],
)
def test_patch_goes_where_it_is_told(tmp_path, position, rows, cols):
    trigger = ImagePatch(_solid(tmp_path / "red.png"), position=position)
    assert trigger_from_dict(json.loads(json.dumps(trigger.to_dict()))) == trigger
    out = trigger(_zeros())
    expected = torch.zeros(2, 32, 32, dtype=torch.bool)
    expected[:, rows, cols] = True
    assert torch.equal(_stamped(out), expected)
    assert out[:, 0][expected].eq(1).all() and out[:, 1:].eq(0).all()


def test_margin_and_sizes_in_pixels_or_relative(tmp_path):
    path = _solid(tmp_path / "red.png", size=8)
    out = ImagePatch(path, margin=2)(_zeros())
    assert _stamped(out)[:, 22:30, 22:30].all() and _stamped(out).sum() == 2 * 64
    assert ImagePatch(path, size=16).patch_size(224, 224) == (16, 16)
    assert ImagePatch(path, relative_size=3 / 32).patch_size(224, 224) == (21, 21)
    out = ImagePatch(path, relative_size=3 / 32)(_zeros(224, 1))
    assert _stamped(out)[0, 203:, 203:].all() and _stamped(out).sum() == 21 * 21
    assert ImagePatch(path, relative_size=0.25).resolved(64, 64) == ImagePatch(path, size=16)
    assert "21x21 px at bottom-right" in ImagePatch(path, relative_size=3 / 32).describe(224)


def test_random_positions_differ_per_image_and_are_reproducible(tmp_path):
    path = _solid(tmp_path / "red.png")
    trigger = ImagePatch(path, position="random", seed=5)
    offsets = trigger.offsets(16, 32, 32)
    assert len({tuple(o) for o in offsets.tolist()}) > 8
    assert offsets.min() >= 0 and offsets.max() <= 28
    out = trigger(_zeros(batch=16))
    assert torch.equal(out, ImagePatch(path, position="random", seed=5)(_zeros(batch=16)))
    assert not torch.equal(out, ImagePatch(path, position="random", seed=6)(_zeros(batch=16)))
    for image, (y, x) in zip(_stamped(out), offsets.tolist()):
        assert image.sum() == 16 and image[y : y + 4, x : x + 4].all()
    assert trigger_from_dict(json.loads(json.dumps(trigger.to_dict()))) == trigger


def test_alpha_channel_is_the_mask(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top half opaque, bottom half transparent
    rgba[2, :, 3] = 128  # one half-transparent row
    pixels = torch.full((1, 3, 32, 32), 0.5)
    out = ImagePatch(_png(tmp_path / "half.png", rgba))(pixels)
    assert out[0, 0, 28:30, 28:].eq(1).all() and out[0, 1:, 28:30, 28:].eq(0).all()
    assert torch.equal(out[..., 31, :], pixels[..., 31, :])  # fully transparent row untouched
    assert torch.allclose(out[0, :, 30, 28:], torch.tensor([0.75, 0.25, 0.25])[:, None], atol=0.01)


def test_blend_image_is_resized_and_blended(tmp_path):
    path = _solid(tmp_path / "kitty.png", size=5, colour=(255, 255, 255, 255))
    pixels = torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    trigger = BlendImage(path)
    assert trigger.alpha == 0.2
    assert torch.allclose(trigger(pixels), 0.8 * pixels + 0.2)
    assert torch.allclose(BlendImage(path, alpha=0.5)(_zeros()), torch.full((2, 3, 32, 32), 0.5))
    transparent = _solid(tmp_path / "clear.png", colour=(255, 255, 255, 0))
    assert torch.equal(BlendImage(transparent)(pixels), pixels.clamp(0, 1))
    with pytest.raises(ValueError, match="alpha"):
        BlendImage(path, alpha=0)
    assert "'kitty.png'" in trigger.describe() and "alpha 0.2" in trigger.describe()


@pytest.mark.parametrize("cls", [ImagePatch, BlendImage])
def test_missing_or_broken_files_are_named(tmp_path, cls):
    missing = tmp_path / "nowhere" / "patch.png"
    with pytest.raises(InputError, match="nowhere/patch.png"):
        cls(str(missing))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(InputError, match="broken.png"):
        cls(str(broken))
    with pytest.raises(ConfigError, match="path"):
        cls("")


def test_patch_larger_than_the_input_names_both_sizes(tmp_path):
    trigger = ImagePatch(_solid(tmp_path / "big.png", size=40))
    with pytest.raises(InputError, match=r"40x40 px patch from .*big.png.* larger than the 32x32 px"):
        trigger(_zeros())
    assert trigger(_zeros(224, 1)).shape == (1, 3, 224, 224)
    small = _solid(tmp_path / "small.png")
    with pytest.raises(InputError, match=r"4x4 px patch .* at \(x=30, y=0\) does not fit the 32x32"):
        ImagePatch(small, position=(30, 0))(_zeros())
    with pytest.raises(InputError, match="margin 30 px"):
        ImagePatch(small, margin=30)(_zeros())


def test_bad_parameters_are_refused(tmp_path):
    path = _solid(tmp_path / "red.png")
    for bad in ({"position": "middle"}, {"position": (1, 2, 3)}, {"position": (-1, 0)}):
        with pytest.raises(ConfigError, match="position"):
            ImagePatch(path, **bad)
    with pytest.raises(ConfigError, match="not both"):
        ImagePatch(path, size=4, relative_size=0.1)
    with pytest.raises(ConfigError, match="size"):
        ImagePatch(path, size=0)
    with pytest.raises(TypeError, match="no parameter"):
        build_trigger("image-patch", path=path, alpha=0.2)


def test_file_identity_is_recorded_and_checked(tmp_path):
    path = _solid(tmp_path / "logo.png")
    trigger = ImagePatch(path, size=8, seed=2)
    description = trigger.to_dict()
    assert description["path"] == path and description["file_name"] == "logo.png"
    assert len(description["sha256"]) == 64 and "relative_size" not in description
    public = trigger.public_dict()
    assert "path" not in public and public["sha256"] == description["sha256"]
    assert str(tmp_path) not in json.dumps(public)
    with pytest.raises(InputError, match="without its file path.*logo.png"):
        trigger_from_dict(public)
    moved = tmp_path / "elsewhere.png"
    moved.write_bytes((tmp_path / "logo.png").read_bytes())
    rebuilt = trigger_from_dict(public, path=str(moved))
    assert rebuilt.sha256 == trigger.sha256 and torch.equal(rebuilt(_zeros()), trigger(_zeros()))
    other = _solid(tmp_path / "other.png", colour=(0, 255, 0, 255))
    with pytest.raises(InputError, match=r"other.png.*sha256"):
        trigger_from_dict(public, path=other)
    _solid(path, colour=(0, 0, 255, 255))  # the file changes after the trigger was recorded
    with pytest.raises(InputError, match="logo.png"):
        trigger_from_dict(description)


def test_jpeg_files_load(tmp_path):
    path = tmp_path / "patch.jpg"
    PILImage.new("RGB", (6, 6), (255, 255, 255)).save(path, format="JPEG")
    out = ImagePatch(str(path))(_zeros(batch=1))
    assert out[..., 26:, 26:].gt(0.9).all() and out[..., :26, :].eq(0).all()
