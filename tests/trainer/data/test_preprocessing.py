"""Decoding and preprocessing against independent PIL/numpy references."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from architectures.registry import IMAGENET_PREPROCESSING, Preprocessing
from trainer.data import decode_image, eval_preprocess
from trainer.data import preprocessing as prep

RNG = np.random.default_rng(0)
# Smooth content: JPEG round trips stay close, so decoders can be compared pixel by pixel.
SMOOTH = np.clip(
    np.add.outer(np.linspace(0, 200, 24), np.linspace(0, 50, 36))[..., None] + [0, 30, 60], 0, 255
).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def numpy_normalize(pixels, p: Preprocessing):
    return (pixels / 255.0 - np.array(p.mean)) / np.array(p.std)


def test_normalize_matches_numpy():
    pixels = RNG.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    got = prep.normalize(tf.constant(pixels), IMAGENET_PREPROCESSING).numpy()
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, numpy_normalize(pixels, IMAGENET_PREPROCESSING), atol=1e-5)


def test_decode_converts_every_mode_to_8bit_rgb():
    gray = SMOOTH[..., 0]
    paletted = Image.fromarray(SMOOTH).convert("P", palette=Image.ADAPTIVE, colors=16)
    frames = [Image.fromarray(SMOOTH).convert("P"), Image.fromarray(255 - SMOOTH).convert("P")]
    animated = io.BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:])
    cases = {  # name: (bytes, expected RGB, tolerance)
        "jpeg": (encode(Image.fromarray(SMOOTH), "JPEG", quality=95), SMOOTH, 8),
        "jpeg_gray": (encode(Image.fromarray(gray), "JPEG", quality=95), gray[..., None], 8),
        "jpeg_cmyk": (
            encode(Image.fromarray(SMOOTH).convert("CMYK"), "JPEG", quality=95),
            SMOOTH,
            8,
        ),
        "png_rgba": (encode(Image.fromarray(SMOOTH).convert("RGBA"), "PNG"), SMOOTH, 0),
        "png_gray": (encode(Image.fromarray(gray), "PNG"), gray[..., None], 0),
        # 16-bit: v * 257 must come back as v (PIL's own RGB conversion clips it instead).
        "png_16bit": (
            encode(Image.fromarray(gray.astype(np.uint16) * 257), "PNG"),
            gray[..., None],
            0,
        ),
        "bmp": (encode(Image.fromarray(SMOOTH), "BMP"), SMOOTH, 0),
        "bmp_gray": (encode(Image.fromarray(gray), "BMP"), gray[..., None], 0),
        "bmp_palette": (encode(paletted, "BMP"), np.asarray(paletted.convert("RGB")), 0),
        "gif_first_frame": (animated.getvalue(), np.asarray(frames[0].convert("RGB")), 0),
    }
    for name, (encoded, expected, tolerance) in cases.items():
        image = decode_image(tf.constant(encoded)).numpy()
        assert image.dtype == np.uint8 and image.shape == (24, 36, 3), name
        error = np.abs(image.astype(int) - np.broadcast_to(expected, (24, 36, 3))).max()
        assert error <= tolerance, (name, error)


def test_decode_raises_on_garbage():
    with pytest.raises(tf.errors.InvalidArgumentError):
        decode_image(tf.constant(b"not an image"))


def test_eval_preprocess_matches_pil_resize_and_centre_crop():
    image = RNG.integers(0, 256, (40, 30, 3)).astype(np.uint8)
    p = Preprocessing(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), crop_fraction=0.8)
    size = 16
    # Shorter side 30 -> int(16 / 0.8) = 20, so 40 x 30 -> 27 x 20 (rounded), then crop 16.
    resized = np.asarray(Image.fromarray(image).resize((20, 27), Image.BILINEAR), np.float64)
    top, left = (27 - size) // 2, (20 - size) // 2
    expected = numpy_normalize(resized[top : top + size, left : left + size], p)
    got = eval_preprocess(tf.constant(image), size, p).numpy()
    assert got.shape == (size, size, 3) and got.dtype == np.float32
    # PIL rounds to uint8 and filters slightly differently: a couple of grey levels.
    np.testing.assert_allclose(got, expected, atol=3 / 255 / 0.2)


def test_eval_preprocess_accepts_grayscale_and_rejects_other_channel_counts():
    gray = tf.constant(SMOOTH[..., :1])
    out = eval_preprocess(gray, 8, IMAGENET_PREPROCESSING).numpy()
    assert out.shape == (8, 8, 3)
    with pytest.raises(ValueError, match="1 or 3"):
        eval_preprocess(tf.zeros([8, 8, 4], tf.uint8), 8, IMAGENET_PREPROCESSING)


def test_light_augmentation_is_a_translation_without_flip():
    image = tf.constant(SMOOTH[:, :24])  # square, asymmetric left-right
    p = Preprocessing(crop_fraction=0.75)
    size = 18  # resize to 24 = 18 / 0.75, pad 1, random 18 x 18 window
    padded = np.pad(prep.resize_shorter_side(image, 24).numpy(), [(1, 1), (1, 1), (0, 0)])
    windows = {
        (i, j): numpy_normalize(padded[i : i + size, j : j + size], p)
        for i in range(26 - size + 1)
        for j in range(26 - size + 1)
    }
    offsets = set()
    for k in range(12):
        out = prep.light_train_preprocess(image, tf.constant([k, 1]), size, p).numpy()
        match = [o for o, w in windows.items() if np.allclose(out, w, atol=1e-5)]
        assert len(match) == 1
        offsets.add(match[0])
    assert len(offsets) > 3  # it does move


def test_imagenet_crop_decodes_jpeg_window_like_the_full_decode():
    encoded = tf.constant(encode(Image.fromarray(SMOOTH), "JPEG", quality=95))
    decoded = decode_image(encoded)
    flips = set()
    for k in range(8):
        seed = tf.constant([k, 3])
        fast = prep.imagenet_train_preprocess(
            encoded, seed, 12, IMAGENET_PREPROCESSING, encoded=True
        ).numpy()
        slow = prep.imagenet_train_preprocess(decoded, seed, 12, IMAGENET_PREPROCESSING).numpy()
        assert fast.shape == (12, 12, 3) and fast.dtype == np.float32
        np.testing.assert_allclose(fast, slow, atol=8 / 255 / 0.224)
        # The gradient runs left to right in every channel: a flip reverses its sign.
        flips.add(bool(np.mean(np.diff(slow[..., 0], axis=1)) < 0))
    assert flips == {True, False}


def test_imagenet_full_area_crop_of_a_square_is_the_resized_image_or_its_mirror():
    image = tf.constant(SMOOTH[:, :24])
    expected = numpy_normalize(tf.image.resize(image, [12, 12]).numpy(), IMAGENET_PREPROCESSING)
    for k in range(4):
        out = prep.imagenet_train_preprocess(
            image, tf.constant([k, 0]), 12, IMAGENET_PREPROCESSING, min_area=1.0
        ).numpy()
        assert np.allclose(out, expected, atol=1e-4) or np.allclose(
            out, expected[:, ::-1], atol=1e-4
        )


@pytest.mark.parametrize("bad", [0.0, 1.5])
def test_bad_crop_settings_name_the_value(bad):
    with pytest.raises(ValueError, match=str(bad)):
        prep.imagenet_train_preprocess(
            tf.zeros([8, 8, 3]), tf.constant([0, 0]), 4, IMAGENET_PREPROCESSING, min_area=bad
        )
    with pytest.raises(ValueError, match="crop_fraction"):
        eval_preprocess(tf.zeros([8, 8, 3]), 4, Preprocessing(crop_fraction=bad))


def test_resolve_augment():
    assert prep.resolve_augment("auto", image_size=224, source="digits") == "light"
    assert prep.resolve_augment("auto", image_size=32, source="folder:x") == "light"
    assert prep.resolve_augment("auto", image_size=224, source="folder:x") == "imagenet"
    assert prep.resolve_augment("none", image_size=32, source="digits") == "none"
    with pytest.raises(ValueError, match="'flip'.*auto, imagenet, light, none"):
        prep.resolve_augment("flip", image_size=32, source="digits")
