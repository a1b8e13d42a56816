"""Encoded images (PNG, JPEG, GIF, BMP, WebP) to Fashion-MNIST pixels, in TensorFlow ops only.

What the SavedModel's `serving_bytes` signature runs, so that TensorFlow Serving and Vertex AI
need no Python, and what `fmnist predict --preprocess` runs (through that signature). It follows
the conversion the Fashion-MNIST paper describes for the dataset's own images (Xiao, Rasul and
Vollgraf 2017, arXiv:1708.07747, section 2: trim the edges close to the corner colour, resize
the longest edge to 28, sharpen with a Gaussian of sigma 1.0, extend the shortest edge to 28
centred, negate, 8-bit grayscale), with the negation decided per image:

1. decode; transparent pixels are composited over white (a cut-out product photo's
   background); convert to grayscale (ITU-R 601 luma, as Pillow's `convert('L')`);
2. decide from the image's border whether the background is light (its median above mid-grey)
   and if so negate: Fashion-MNIST is a light garment on black;
3. trim the rows and columns whose pixels are all within 5% of the maximum intensity of the
   background (the border's median); an image with nothing else is kept whole;
4. stretch the intensities so that the background becomes 0 (black, as the canvas);
5. resize so that the longest edge is 28 pixels (antialiased), sharpen (unsharp mask,
   Gaussian sigma 1.0, 3×3), and centre on a black 28×28 canvas; round to uint8.

Every image is checked before it is decoded: empty, not an image format read here, smaller
than `MIN_SIDE` or with more than `MAX_PIXELS` pixels (read from the header: a 10,000×10,000
image is refused without allocating it). Data that fails to decode (corrupt, truncated) is
caught per image too: the images go through a `tf.data` pipeline that drops failing elements
(`ignore_errors`), and a missing answer becomes that image's error. So one bad image never
fails the batch: each gets its own error message and the others their pixels.
"""

from __future__ import annotations

import tensorflow as tf

from fmnist.dataset import IMAGE_SIZE

# Larger images are refused before decoding: 4096×4096 RGBA is 64 MiB decoded, 256 MiB as
# float32 while converting. Photos from a phone's camera need downscaling first.
MAX_PIXELS = 4096 * 4096
# Smaller images hold too little to classify (a 1×1 image is one colour).
MIN_SIDE = 8
# Pixels within this fraction of the maximum intensity of the background count as background
# (the Fashion-MNIST paper's "closeness" for trimming: 5%).
TRIM_TOLERANCE = 0.05
SHARPEN_SIGMA = 1.0
FORMATS = "PNG, JPEG, GIF, BMP or WebP"

# Outcome of the header check, then of decoding: an index into `_MESSAGES`.
OK, EMPTY, UNKNOWN_FORMAT, TOO_SMALL, TOO_LARGE, CORRUPT = range(6)
# Each outcome's message, as (text before the image's size, text after it); no size: "".
_MESSAGES = (
    ("", ""),
    ("", "empty: no image bytes (send the file's bytes, base64-encoded in JSON)"),
    ("", f"not an image in a format this model reads ({FORMATS}): send the file's bytes unchanged"),
    ("the image is ", f" pixels, smaller than {MIN_SIDE}×{MIN_SIDE}: too little to classify"),
    (
        "the image is ",
        f" pixels, more than {MAX_PIXELS:,} ({int(MAX_PIXELS**0.5)}×{int(MAX_PIXELS**0.5)}); "
        "downscale it first",
    ),
    ("", "corrupt or truncated image data: it could not be decoded; send the whole file"),
)

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
# Enough bytes to read every header field below without reading past the end.
_HEADER = 32
# Valid stand-ins, decoded in place of what must not be: a 1×1 PNG and an 8×8 JPEG (Pillow's).
_TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da"
    "63606060600000000500017aa857500000000049454e44ae426082"
)
_TINY_JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300100b0c0e0c0a100e0d0e1211101318281a18"
    "1616183123251d283a333d3c3933383740485c4e404457453738506d51575f626768673e4d717970647"
    "85c656763ffc0000b080008000801011100ffc40014000100000000000000000000000000000007ffc400"
    "14100100000000000000000000000000000000ffda0008010100003f003f7fffd9"
)


def _fields(head: tf.Tensor, start: int, length: int, big_endian: bool) -> tf.Tensor:
    """Unsigned integers stored in bytes `start`..`start+length` of each header (N,) -> (N,)."""
    values = tf.io.decode_raw(tf.strings.substr(head, start, length), tf.uint8)
    values = tf.cast(tf.reshape(values, [-1, length]), tf.int64)  # (N, length), also for N = 0
    order = reversed(range(length)) if big_endian else range(length)
    return tf.reduce_sum(values * tf.constant([256**i for i in order], tf.int64), axis=-1)


def _webp_size(head: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(width, height) (N,) from WebP headers: lossy (VP8), lossless (VP8L), extended (VP8X)."""
    chunk = tf.strings.substr(head, 12, 4)
    b = [_fields(head, 21 + i, 1, True) for i in range(4)]
    lossless = (1 + b[0] + (b[1] % 64) * 256, 1 + b[1] // 64 + b[2] * 4 + (b[3] % 16) * 1024)
    extended = (1 + _fields(head, 24, 3, False), 1 + _fields(head, 27, 3, False))
    lossy = (_fields(head, 26, 2, False) % 16384, _fields(head, 28, 2, False) % 16384)
    is_lossless, is_extended = tf.equal(chunk, "VP8L"), tf.equal(chunk, "VP8X")
    width, height = (
        tf.where(is_lossless, lossless[i], tf.where(is_extended, extended[i], lossy[i]))
        for i in (0, 1)
    )
    return width, height


def _size_outcome(width: tf.Tensor, height: tf.Tensor) -> tf.Tensor:
    """OK, TOO_SMALL or TOO_LARGE for each (width, height)."""
    # A side alone over the limit counts first: two sides of 3 billion (a PNG header can say
    # up to 2^32 - 1) overflow the int64 product, which then passes as small.
    too_large = (tf.maximum(width, height) > MAX_PIXELS) | (width * height > MAX_PIXELS)
    return tf.where(
        tf.minimum(width, height) < MIN_SIDE, TOO_SMALL, tf.where(too_large, TOO_LARGE, OK)
    )


def _headers(image_bytes: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """(outcome, width, height, is_jpeg, is_png) (N,) read from the headers, nothing decoded.

    Plain byte arithmetic on zero-padded copies of the first bytes, which cannot fail. A
    JPEG's size needs a parser that can (`tf.io.extract_jpeg_shape`): it is read with the
    decoding, and its outcome here is OK.
    """
    head = tf.strings.join([tf.strings.substr(image_bytes, 0, _HEADER), b"\x00" * _HEADER])
    prefix = lambda n: tf.strings.substr(head, 0, n)  # noqa: E731
    is_png = tf.equal(prefix(8), _PNG)
    is_jpeg = tf.equal(prefix(3), _JPEG)
    is_gif = tf.logical_or(tf.equal(prefix(6), b"GIF87a"), tf.equal(prefix(6), b"GIF89a"))
    is_bmp = tf.equal(prefix(2), b"BM")
    is_webp = tf.logical_and(
        tf.equal(prefix(4), b"RIFF"), tf.equal(tf.strings.substr(head, 8, 4), b"WEBP")
    )
    webp_w, webp_h = _webp_size(head)
    # A BMP stores its height negative when its rows run top to bottom.
    bmp_h = _fields(head, 22, 4, False)
    bmp_h = tf.abs(tf.where(bmp_h >= 2**31, bmp_h - 2**32, bmp_h))
    jpeg_size = tf.fill(tf.shape(is_jpeg), tf.constant(MIN_SIDE, tf.int64))
    width = tf.zeros(tf.shape(is_jpeg), tf.int64)
    height = tf.zeros(tf.shape(is_jpeg), tf.int64)
    for is_format, w, h in (
        (is_png, _fields(head, 16, 4, True), _fields(head, 20, 4, True)),
        (is_jpeg, jpeg_size, jpeg_size),
        (is_gif, _fields(head, 6, 2, False), _fields(head, 8, 2, False)),
        (is_bmp, _fields(head, 18, 4, False), bmp_h),
        (is_webp, webp_w, webp_h),
    ):
        width = tf.where(is_format, w, width)
        height = tf.where(is_format, h, height)
    known = is_png | is_jpeg | is_gif | is_bmp | is_webp
    outcome = tf.where(
        tf.equal(tf.strings.length(image_bytes), 0),
        EMPTY,
        tf.where(known, _size_outcome(width, height), UNKNOWN_FORMAT),
    )
    return outcome, width, height, is_jpeg, is_png


def _decode(index: tf.Tensor, data: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """(index, (height, width) if a JPEG, the image as a serialized (H, W, 4) uint8 RGBA if a
    PNG, as a serialized (H, W, 3) uint8 RGB if not).

    Raises on corrupt data: it runs inside `tf.data`, which drops the failing element. Kept
    small and without branches on purpose: both decoders run, the one that does not apply on a
    tiny stand-in, because a `tf.cond` here cost more than that second decoding on a batch and
    on a PNG (a little less on one JPEG: docs/measurements.md).
    """
    is_jpeg = tf.equal(tf.strings.substr(data, 0, 3), _JPEG)
    jpeg_hw = tf.cast(tf.io.extract_jpeg_shape(tf.where(is_jpeg, data, _TINY_JPEG))[:2], tf.int64)
    allowed = tf.logical_or(
        tf.logical_not(is_jpeg), tf.equal(_size_outcome(jpeg_hw[1], jpeg_hw[0]), OK)
    )
    data = tf.where(allowed, data, _TINY_PNG)  # a JPEG too large or small is not decoded
    is_png = tf.equal(tf.strings.substr(data, 0, 8), _PNG)
    rgba = tf.io.decode_png(tf.where(is_png, data, _TINY_PNG), channels=4)
    rgb = tf.io.decode_image(
        tf.where(is_png, _TINY_JPEG, data), channels=3, expand_animations=False
    )
    return index, jpeg_hw, tf.io.serialize_tensor(rgba), tf.io.serialize_tensor(rgb)


def _parse_rgba(is_png: tf.Tensor, png: tf.Tensor, other: tf.Tensor) -> tf.Tensor:
    """The decoded image as (H, W, 4) uint8 RGBA: a PNG's as decoded, another format's opaque."""
    rgba = tf.cond(
        is_png,
        lambda: tf.io.parse_tensor(png, tf.uint8),
        lambda: tf.pad(
            tf.io.parse_tensor(other, tf.uint8), [[0, 0], [0, 0], [0, 1]], constant_values=255
        ),
    )
    return tf.ensure_shape(rgba, (None, None, 4))


def _gray(rgba: tf.Tensor) -> tf.Tensor:
    """RGBA (H, W, 4) uint8 as float32 grayscale (H, W) 0..255, transparency over white."""
    rgba = tf.cast(rgba, tf.float32)
    gray = tf.image.rgb_to_grayscale(rgba[..., :3])[..., 0]  # ITU-R 601 luma
    alpha = rgba[..., 3] / 255.0
    return gray * alpha + 255.0 * (1.0 - alpha)


def _median(values: tf.Tensor) -> tf.Tensor:
    ordered = tf.sort(values)
    return ordered[tf.size(ordered) // 2]


def _gaussian_kernel(sigma: float) -> tf.Tensor:
    """A normalised 3×3 Gaussian (radius 1), as (3, 3, 1, 1) for `tf.nn.conv2d`."""
    x = tf.constant([-1.0, 0.0, 1.0])
    g = tf.exp(-(x**2) / (2.0 * sigma**2))
    kernel = g[:, None] * g[None, :]
    return tf.reshape(kernel / tf.reduce_sum(kernel), (3, 3, 1, 1))


def fashion_mnist_pixels(gray: tf.Tensor) -> tf.Tensor:
    """A float32 grayscale image (H, W), 0..255, as a Fashion-MNIST image (28, 28, 1) uint8.

    Steps 2 to 5 of the module's docstring: background decided from the border and negated if
    light, trimmed, stretched to a black background, resized, sharpened and centred.
    """
    border = tf.concat([gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]], axis=0)
    background = _median(border)
    light = background > 127.5
    gray = tf.where(light, 255.0 - gray, gray)
    background = tf.where(light, 255.0 - background, background)

    foreground = tf.abs(gray - background) > TRIM_TOLERANCE * 255.0  # (H, W)
    rows = tf.where(tf.reduce_any(foreground, axis=1))[:, 0]
    cols = tf.where(tf.reduce_any(foreground, axis=0))[:, 0]
    shape = tf.shape(gray, out_type=tf.int64)
    blank = tf.equal(tf.size(rows), 0)  # nothing but background: kept whole
    zero = tf.constant(0, tf.int64)
    # The extremes of empty lists are defined by a sentinel (then `blank` overrides them).
    top = tf.where(blank, zero, tf.reduce_min(tf.concat([rows, shape[:1]], 0)))
    left = tf.where(blank, zero, tf.reduce_min(tf.concat([cols, shape[1:]], 0)))
    bottom = tf.where(blank, shape[0], tf.reduce_max(tf.concat([rows, [zero]], 0)) + 1)
    right = tf.where(blank, shape[1], tf.reduce_max(tf.concat([cols, [zero]], 0)) + 1)
    crop = gray[top:bottom, left:right]

    # The background becomes 0, the brightest possible garment pixel stays 255.
    crop = tf.maximum(crop - background, 0.0) * (255.0 / tf.maximum(255.0 - background, 1.0))

    h = tf.cast(bottom - top, tf.float32)
    w = tf.cast(right - left, tf.float32)
    scale = IMAGE_SIZE / tf.maximum(h, w)
    new_h = tf.clip_by_value(tf.cast(tf.round(h * scale), tf.int32), 1, IMAGE_SIZE)
    new_w = tf.clip_by_value(tf.cast(tf.round(w * scale), tf.int32), 1, IMAGE_SIZE)
    small = tf.image.resize(crop[..., None], [new_h, new_w], method="bilinear", antialias=True)

    # Unsharp mask: the image plus its difference from a Gaussian blur of itself.
    padded = tf.pad(small[None], [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
    blurred = tf.nn.conv2d(padded, _gaussian_kernel(SHARPEN_SIGMA), 1, "VALID")[0]
    sharp = tf.clip_by_value(2.0 * small - blurred, 0.0, 255.0)  # (new_h, new_w, 1)

    top, left = (IMAGE_SIZE - new_h) // 2, (IMAGE_SIZE - new_w) // 2
    canvas = tf.pad(
        sharp, [[top, IMAGE_SIZE - new_h - top], [left, IMAGE_SIZE - new_w - left], [0, 0]]
    )
    canvas = tf.ensure_shape(canvas, (IMAGE_SIZE, IMAGE_SIZE, 1))
    return tf.cast(tf.round(canvas), tf.uint8)


def _messages(outcome: tf.Tensor, width: tf.Tensor, height: tf.Tensor) -> tf.Tensor:
    """The error message of each image ("" for none), with its size where that is the error."""
    before = tf.gather(tf.constant([m[0] for m in _MESSAGES]), outcome)
    after = tf.gather(tf.constant([m[1] for m in _MESSAGES]), outcome)
    size = tf.strings.join([tf.strings.as_string(width), tf.strings.as_string(height)], "×")
    size = tf.where(tf.strings.length(before) > 0, size, "")
    return tf.strings.join([before, size, after])


# A batch of encoded images, as `images_to_pixels` takes it.
BATCH_SPEC = tf.TensorSpec((None,), tf.string)


def _decode_all(image_bytes: tf.Tensor, candidates: tf.Tensor):
    """Decode the images at indices `candidates`, each on its own: (decoded (N,) bool, JPEG
    (height, width) (N, 2), serialized RGBA of PNGs (N,), serialized RGB of the others (N,))
    for all N images, by index."""
    n = tf.shape(image_bytes, out_type=tf.int64)[0]
    ds = tf.data.Dataset.from_tensor_slices((candidates, tf.gather(image_bytes, candidates)))
    ds = ds.map(_decode).ignore_errors()
    # One element that cannot fail, last: the single batch below exists even when every image
    # failed. (`Dataset.reduce` needs no such end, but prepares its reducing function again at
    # every call: most of a one-photo request's time, docs/measurements.md.)
    end = (tf.constant(-1, tf.int64), tf.zeros([2], tf.int64), tf.constant(""), tf.constant(""))
    ds = ds.concatenate(tf.data.Dataset.from_tensors(end))
    ds = ds.batch(tf.size(candidates, out_type=tf.int64) + 1)
    options = tf.data.Options()
    # Each call builds this pipeline anew: no tuning thread to wait for when it is torn down
    # (see fmnist.training.inputs), no graph rewrites to pay for on every call.
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    index, *values = ds.with_options(options).get_single_element()
    where = index[:-1, None]
    starts = (
        tf.zeros([n], tf.bool),
        tf.zeros([n, 2], tf.int64),
        tf.fill([n], ""),
        tf.fill([n], ""),
    )
    updates = (tf.ones_like(index[:-1], tf.bool), *(v[:-1] for v in values))
    return tuple(tf.tensor_scatter_nd_update(s, where, u) for s, u in zip(starts, updates))


def images_to_pixels(image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Encoded images (N,) string -> (pixels (N, 28, 28, 1) uint8, errors (N,) string).

    An image that cannot be used gets zero pixels and a message saying why; the others are
    unaffected. Graph-safe: this is what the `serving_bytes` signature runs.
    """
    image_bytes = tf.reshape(image_bytes, [-1])
    outcome, width, height, is_jpeg, is_png = _headers(image_bytes)
    candidates = tf.where(tf.equal(outcome, OK))[:, 0]
    decoded, jpeg_hw, png, other = _decode_all(image_bytes, candidates)
    width = tf.where(is_jpeg & decoded, jpeg_hw[:, 1], width)
    height = tf.where(is_jpeg & decoded, jpeg_hw[:, 0], height)
    outcome = tf.where(is_jpeg & decoded, _size_outcome(width, height), outcome)
    outcome = tf.where(tf.equal(outcome, OK) & tf.logical_not(decoded), CORRUPT, outcome)

    def convert(args):
        ok, is_png, png, other = args
        return tf.cond(
            ok,
            lambda: fashion_mnist_pixels(_gray(_parse_rgba(is_png, png, other))),
            lambda: tf.zeros((IMAGE_SIZE, IMAGE_SIZE, 1), tf.uint8),
        )

    pixels = tf.map_fn(
        convert,
        (tf.equal(outcome, OK), is_png, png, other),
        fn_output_signature=tf.TensorSpec((IMAGE_SIZE, IMAGE_SIZE, 1), tf.uint8),
    )
    return pixels, _messages(outcome, width, height)


# `images_to_pixels` traced once per process and shared: the bytes signature calls it, and so
# does calibrating the out-of-distribution detector. Without autograph, which would convert
# this module's code for nothing (its branches are `tf.cond` and `tf.where` already): its
# tracing took three times as long (docs/measurements.md).
to_pixels = tf.function(images_to_pixels, input_signature=[BATCH_SPEC], autograph=False)
