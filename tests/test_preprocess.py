"""The bytes signature's preprocessing: encoded images in, Fashion-MNIST pixels or one error
per image out, in TensorFlow ops only (`fmnist.serving.preprocess`)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from fmnist.serving import preprocess, synthetic
from helpers import png_header

TO_PIXELS = preprocess.to_pixels
FEW = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def run(images: list[bytes]) -> tuple[np.ndarray, list[str]]:
    """(pixels (N, 28, 28), error messages) of encoded images, through the graph function."""
    pixels, errors = TO_PIXELS(tf.constant(images, tf.string))
    return pixels.numpy()[..., 0], [e.decode() for e in errors.numpy()]


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def garment() -> np.ndarray:
    """A Fashion-MNIST-like image: a light, asymmetric shape on black, centred as the dataset's
    are (its box is 28 rows by 14 columns, 7 from the left)."""
    image = np.zeros((28, 28), np.uint8)
    image[:, 7:17] = 180  # a trouser leg, the full height
    image[:6, 17:21] = 250  # and a pocket on one side
    image[10:20, 9:12] = 90
    return image


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def product_photo(image: np.ndarray, size=(120, 100), background=253) -> Image.Image:
    """`image` dark on a light background, 4× larger, off-centre on an RGB canvas."""
    dark = Image.fromarray(255 - image).resize((112, 112), Image.Resampling.BICUBIC)
    canvas = Image.new("L", (size[0] + 60, size[1] + 60), background)
    canvas.paste(dark, (20, 10))
    return canvas.convert("RGB")


def test_a_fashion_mnist_image_comes_back_as_itself():
    pixels, errors = run([encode(Image.fromarray(garment()))])
    assert errors == [""]
    assert correlation(pixels[0], garment()) > 0.95
    assert pixels[0].dtype == np.uint8 and pixels[0].shape == (28, 28)


def test_a_dark_garment_on_a_light_background_is_negated_trimmed_and_centred():
    pixels, errors = run(
        [encode(product_photo(garment())), encode(product_photo(garment()), "JPEG")]
    )
    assert errors == ["", ""]
    for got in pixels:
        assert correlation(got, garment()) > 0.9  # light on black again, where it was
        assert got[:, 0].max() < 30 and got[:, -1].max() < 30  # black margins, as trimmed
        assert (got > 20).any(axis=1).sum() >= 27  # the longest edge spans the canvas


def test_an_image_already_on_black_is_not_negated():
    photo = Image.fromarray(np.pad(garment(), 30)).resize((176, 176)).convert("RGB")
    pixels, _ = run([encode(photo)])
    assert correlation(pixels[0], garment()) > 0.9


def test_transparency_counts_as_the_light_background():
    """A cut-out product photo: dark garment, transparent (black, alpha 0) elsewhere."""
    rgba = np.zeros((84, 84, 4), np.uint8)
    mask = np.asarray(Image.fromarray(garment()).resize((84, 84))) > 40
    rgba[mask] = (30, 30, 60, 255)
    pixels, errors = run([encode(Image.fromarray(rgba, "RGBA"))])
    assert errors == [""]
    assert correlation(pixels[0] > 60, garment() > 40) > 0.8


@pytest.mark.parametrize(
    ("mode", "fmt", "options"),
    [
        ("L", "PNG", {}),
        ("LA", "PNG", {}),
        ("RGBA", "PNG", {}),
        ("P", "PNG", {}),  # a palette
        ("I;16", "PNG", {}),  # 16 bits per pixel
        ("L", "JPEG", {"quality": 95}),
        ("CMYK", "JPEG", {"quality": 95}),
        ("RGB", "JPEG", {"progressive": True, "quality": 95}),
        ("P", "GIF", {}),
        ("RGB", "BMP", {}),
        ("RGB", "WEBP", {"quality": 95}),
        ("RGB", "WEBP", {"lossless": True}),
    ],
)
def test_every_format_and_mode_gives_the_same_pixels(mode, fmt, options):
    photo = product_photo(garment())
    reference, _ = run([encode(photo)])
    if mode == "I;16":
        converted = Image.fromarray(np.asarray(photo.convert("L")).astype(np.uint16) * 257)
    elif mode == "P":  # a palette made for the image, as image editors make them
        converted = photo.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        converted = photo.convert(mode)
    pixels, errors = run([encode(converted, fmt, **options)])
    assert errors == [""]
    assert np.abs(pixels[0].astype(int) - reference[0]).mean() < 6, (mode, fmt)


def jpeg_header(width: int, height: int) -> bytes:
    """A real JPEG with its frame header's size changed: decoding it would allocate that."""
    data = bytearray(encode(Image.new("L", (16, 16)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


GOOD = encode(product_photo(garment()))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty: no image bytes"),
        (b"not an image", "not an image in a format this model reads (PNG, JPEG"),
        (b"%PDF-1.4", "not an image in a format"),
        (GOOD[:200], "corrupt or truncated image data"),
        (encode(Image.new("L", (1, 1))), "the image is 1×1 pixels, smaller than 8×8"),
        (encode(Image.new("RGB", (300, 5))), "the image is 300×5 pixels, smaller than 8×8"),
        (png_header(10_000, 10_000), "the image is 10000×10000 pixels, more than 16,777,216"),
        (jpeg_header(20_000, 30_000), "the image is 20000×30000 pixels, more than"),
        (encode(product_photo(garment()), "JPEG")[:300], "corrupt or truncated image data"),
        (b"GIF89a" + struct.pack("<HH", 9000, 9000), "the image is 9000×9000 pixels"),
        (b"BM" + b"\0" * 16 + struct.pack("<ii", 5000, -5000), "the image is 5000×5000 pixels"),
    ],
)
def test_bad_images_get_their_own_error_and_the_batch_is_answered(data, message):
    pixels, errors = run([GOOD, data, GOOD])
    alone, _ = run([GOOD])
    assert errors[0] == errors[2] == ""
    assert errors[1].startswith(message), errors[1]
    np.testing.assert_array_equal(pixels[0], alone[0])
    np.testing.assert_array_equal(pixels[2], alone[0])
    assert not pixels[1].any()


def test_each_image_of_a_mixed_batch_gets_its_own_answer():
    # Different images in different formats among ones that fail at each step: every answer
    # lands at its own image's place, as that image alone gets it.
    photo = product_photo(garment())
    batch = [
        encode(photo.rotate(90, expand=True), "JPEG", quality=95),
        GOOD[:300],  # fails to decode
        encode(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        b"",  # refused before decoding
        encode(photo.convert("P", palette=Image.Palette.ADAPTIVE).rotate(180), "GIF"),
        encode(photo.crop((0, 0, 150, 90)), "BMP"),
        encode(photo, "JPEG")[:400],  # fails to decode
    ]
    pixels, errors = run(batch)
    for image, got, error in zip(batch, pixels, errors):
        alone_pixels, [alone_error] = run([image])
        assert error == alone_error
        np.testing.assert_array_equal(got, alone_pixels[0])
    assert [bool(e) for e in errors] == [False, True, False, True, False, False, True]
    assert len({p.tobytes() for p in pixels[[0, 2, 4, 5]]}) == 4  # four different images


def test_a_blank_image_is_kept_whole_not_refused():
    pixels, errors = run([encode(Image.new("RGB", (50, 40), (255, 255, 255)))])
    assert errors == [""] and not pixels.any()  # white negated: black; the flag will say


def test_an_empty_batch():
    pixels, errors = TO_PIXELS(tf.zeros([0], tf.string))
    assert pixels.shape == (0, 28, 28, 1) and errors.shape == (0,)


@FEW
@given(junk=st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_any_bytes_beside_a_good_image_never_fail_the_batch(junk):
    pixels, errors = run([*junk, GOOD])
    alone, _ = run([GOOD])
    assert errors[-1] == ""
    np.testing.assert_array_equal(pixels[-1], alone[0])
    for message, got in zip(errors[:-1], pixels[:-1]):
        assert message or got.dtype == np.uint8  # an error, or pixels it could decode


@FEW
@given(cut=st.integers(0, len(GOOD) - 1))
def test_a_truncated_png_is_an_error(cut):
    _, errors = run([GOOD[:cut]])
    assert errors[0]


@FEW
@given(width=st.integers(0, 2**32 - 1), height=st.integers(0, 2**32 - 1))
@example(width=3_036_988_439, height=3_037_012_561)  # their product overflowed int64
def test_any_declared_png_size_is_judged_from_the_header(width, height):
    _, (error,) = run([png_header(width, height)])
    if min(width, height) < preprocess.MIN_SIDE:
        assert error.startswith(f"the image is {width}×{height} pixels, smaller")
    elif width * height > preprocess.MAX_PIXELS:
        assert error.startswith(f"the image is {width}×{height} pixels, more than")
    else:
        assert error.startswith("corrupt or truncated")  # a header and no pixel data


def test_synthetic_product_photos_come_back_close_to_their_garment(tiny_data):
    images = tiny_data["test"][0][:6]
    photos = synthetic.product_photos(images, seed=0)
    assert all(Image.open(io.BytesIO(p)).mode == "RGB" for p in photos)
    assert synthetic.product_photos(images, seed=0) == photos  # reproducible
    pixels, errors = run(photos)
    assert errors == [""] * 6
    assert np.mean([correlation(a, b) for a, b in zip(pixels, images)]) > 0.6
