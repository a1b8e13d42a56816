"""Synthetic images for serving: product-style photos made from Fashion-MNIST images, and sets
of images unlike Fashion-MNIST (out of distribution), generated offline with NumPy and Pillow.

The photos are what a shop's client sends: an RGB PNG or JPEG, larger than 28×28 and not
square, with a coloured garment dark on a light background. They test the bytes signature's
preprocessing, and (made from validation images) take part in choosing the out-of-distribution
threshold, so that preprocessed photos are not flagged. `naive_pixels` is what a client that
skips preprocessing would send instead: the photo merely converted to grayscale and resized.

Every generator is a pure function of its inputs and a `numpy.random.Generator`.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fmnist.dataset import IMAGE_SIZE

# Light-gray backgrounds, as the paper describes Zalando's product photos (#fdfdfd) and darker.
_BACKGROUNDS = (0xFD, 0xF5, 0xEE, 0xFF)


def product_photo(image: np.ndarray, rng: np.random.Generator) -> bytes:
    """A Fashion-MNIST image (28, 28) uint8 as an encoded RGB product photo (PNG or JPEG).

    The garment, dark and in a random colour, on a light background, scaled up 3-10 times
    (bicubic) and placed off-centre on a canvas of random aspect ratio.
    """
    ink = image.astype(np.float64) / 255.0  # (28, 28): how much garment each pixel holds
    background = np.full(3, rng.choice(_BACKGROUNDS), np.float64)
    colour = rng.uniform(0, 90, size=3)  # a dark garment: it shows as bright once negated
    rgb = background * (1 - ink[..., None]) + colour * ink[..., None]  # (28, 28, 3)
    side = int(rng.integers(84, 281))
    photo = Image.fromarray(np.round(rgb).astype(np.uint8), "RGB").resize(
        (side, side), Image.Resampling.BICUBIC
    )
    width = int(side * rng.uniform(1.0, 1.5))
    height = int(side * rng.uniform(1.0, 1.5))
    canvas = Image.new("RGB", (width, height), tuple(int(v) for v in background))
    corner = (int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1)))
    canvas.paste(photo, corner)
    out = io.BytesIO()
    if rng.random() < 0.5:
        # The fastest level: PNG is lossless, so the pixels are the same at any level and only
        # the file's size changes (docs/measurements.md).
        canvas.save(out, format="PNG", compress_level=1)
    else:
        canvas.save(out, format="JPEG", quality=int(rng.integers(80, 96)))
    return out.getvalue()


def product_photos(images: np.ndarray, seed: int) -> list[bytes]:
    """`product_photo` of each image (N, 28, 28), reproducibly."""
    rng = np.random.default_rng(seed)
    return [product_photo(image, rng) for image in images]


def naive_pixels(photo: bytes) -> np.ndarray:
    """What a client that skips the preprocessing sends: the photo converted to grayscale and
    squeezed to 28×28, (28, 28) uint8."""
    with Image.open(io.BytesIO(photo)) as img:
        small = img.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        return np.asarray(small, np.uint8)


def _canvas() -> Image.Image:
    return Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 0)


def blank(n: int, rng: np.random.Generator) -> np.ndarray:
    """Images of one grey level each, black to white (N, 28, 28)."""
    levels = rng.integers(0, 256, n).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None], (n, IMAGE_SIZE, IMAGE_SIZE)).copy()


def near_blank(n: int, rng: np.random.Generator) -> np.ndarray:
    """Black images with a few bright specks (1-3% of the pixels)."""
    images = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for image in images:
        count = int(rng.integers(8, 25))
        rows, cols = rng.integers(0, IMAGE_SIZE, (2, count))
        image[rows, cols] = rng.integers(100, 256, count)
    return images


def noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform noise, at a random brightness and contrast per image."""
    low = rng.integers(0, 128, (n, 1, 1))
    span = rng.integers(32, 256 - 128, (n, 1, 1))
    return (low + rng.random((n, IMAGE_SIZE, IMAGE_SIZE)) * span).astype(np.uint8)


def smooth_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise blurred into blobs: coarse random fields upsampled (bicubic) to 28×28."""
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for i in range(n):
        coarse = rng.integers(0, 256, (int(rng.integers(3, 8)),) * 2).astype(np.uint8)
        out[i] = np.asarray(
            Image.fromarray(coarse).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
        )
    return out


def _text(n: int, rng: np.random.Generator, alphabet: str) -> np.ndarray:
    """Characters of `alphabet` drawn white on black (Pillow's scalable default font), at a
    random size, position and angle."""
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for i in range(n):
        size = int(rng.integers(16, 27))
        font = ImageFont.load_default(size)
        char = alphabet[int(rng.integers(len(alphabet)))]
        img = _canvas()
        draw = ImageDraw.Draw(img)
        left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
        x = (IMAGE_SIZE - (right - left)) / 2 - left + rng.uniform(-3, 3)
        y = (IMAGE_SIZE - (bottom - top)) / 2 - top + rng.uniform(-3, 3)
        draw.text((x, y), char, fill=int(rng.integers(180, 256)), font=font)
        img = img.rotate(rng.uniform(-20, 20), resample=Image.Resampling.BILINEAR)
        out[i] = np.asarray(img)
    return out


def digits(n: int, rng: np.random.Generator) -> np.ndarray:
    """Typeset digits 0-9, white on black as in MNIST."""
    return _text(n, rng, "0123456789")


def letters(n: int, rng: np.random.Generator) -> np.ndarray:
    """Typeset capital letters, white on black."""
    return _text(n, rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def shapes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Other objects: one to three ellipses, rectangles, polygons or thick lines each."""
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for i in range(n):
        img = _canvas()
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = rng.integers(0, 18, 2)
            x1, y1 = x0 + rng.integers(6, 11), y0 + rng.integers(6, 11)
            fill = int(rng.integers(120, 256))
            kind = int(rng.integers(4))
            if kind == 0:
                draw.ellipse((x0, y0, x1, y1), fill=fill)
            elif kind == 1:
                draw.rectangle((x0, y0, x1, y1), outline=fill, width=int(rng.integers(1, 4)))
            elif kind == 2:
                points = [tuple(int(v) for v in rng.integers(0, IMAGE_SIZE, 2)) for _ in range(3)]
                draw.polygon(points, fill=fill)
            else:
                draw.line((x0, y0, x1 + 8, y1 + 8), fill=fill, width=int(rng.integers(2, 5)))
        out[i] = np.asarray(img)
    return out


def strokes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Scribbles: random smooth pen strokes, as handwriting is made of."""
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for i in range(n):
        img = _canvas()
        draw = ImageDraw.Draw(img)
        point = rng.uniform(6, 22, 2)
        heading = rng.uniform(0, 2 * np.pi)
        path = [tuple(point)]
        for _ in range(int(rng.integers(6, 14))):
            heading += rng.normal(0, 0.8)
            point = np.clip(point + 2.5 * np.array([np.cos(heading), np.sin(heading)]), 3, 24)
            path.append(tuple(point))
        draw.line(path, fill=int(rng.integers(180, 256)), width=int(rng.integers(2, 4)))
        out[i] = np.asarray(img)
    return out


def handwritten_digits() -> np.ndarray:
    """The 1,797 real handwritten digits bundled with scikit-learn (8×8, 17 grey levels),
    white on black, scaled to 20×20 and centred in 28×28 as MNIST's are."""
    from sklearn.datasets import load_digits

    small = (load_digits().images * (255.0 / 16.0)).astype(np.uint8)
    out = np.zeros((len(small), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for i, image in enumerate(small):
        out[i, 4:24, 4:24] = np.asarray(
            Image.fromarray(image).resize((20, 20), Image.Resampling.BILINEAR)
        )
    return out


def out_of_distribution_sets(
    images: np.ndarray, photos: list[bytes], n: int, seed: int, held_out: bool
) -> dict[str, np.ndarray]:
    """Named sets of out-of-distribution images (N, 28, 28) uint8.

    From `images` (Fashion-MNIST images of one split) their negatives, and from `photos`
    (product photos of that split) what a client skipping preprocessing sends. Generated:
    blank and near-blank images, noise, and drawn objects. The tuning sets (`held_out` False)
    draw typeset digits and shapes; the held-out ones add families the threshold never saw:
    typeset letters, scribbles and real handwritten digits.
    """
    rng = np.random.default_rng(seed)
    sets = {
        "inverted": 255 - images[:n],
        "photo_without_preprocessing": np.stack([naive_pixels(p) for p in photos[:n]]),
        "blank": blank(n, rng),
        "near_blank": near_blank(n, rng),
        "noise": noise(n, rng),
        "smooth_noise": smooth_noise(n, rng),
        "typeset_digits": digits(n, rng),
        "shapes": shapes(n, rng),
    }
    if held_out:
        sets |= {
            "typeset_letters": letters(n, rng),
            "scribbles": strokes(n, rng),
            "handwritten_digits": handwritten_digits()[:n],
        }
    return sets
