"""A dependency-free PNG writer and the ratio bar chart of ``layerforge bench``.

NumPy draws into an (H, W, 3) uint8 canvas; zlib compresses it into the IDAT chunk of an
8-bit RGB PNG (IHDR, IDAT, IEND, each with its CRC-32). Text uses the 5x7 bitmap font below
(printable ASCII), drawn at an integer scale. No plotting library is needed or imported.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Sequence

import numpy as np

# 5x7 glyphs for ASCII 32..126: seven rows of five pixels, each row a hex byte whose bit 4
# is the leftmost pixel; g, j, p, q and y are redrawn below with two rows of descender, so a
# glyph cell is 5x9. Characters outside the table are drawn as '?'.
_GLYPHS = [
    "00000000000000", "04040404040004", "0A0A0A00000000", "0A0A1F0A1F0A0A", "040F140E051E04", "18190204081303", "0C12140815120D", "0C040800000000",  #   ! " # $ % & '
    "02040808080402", "08040202020408", "0004150E150400", "0004041F040400", "000000000C0408", "0000001F000000", "00000000000C0C", "00010204081000",  # ( ) * + , - . /
    "0E11131519110E", "040C040404040E", "0E11010204081F", "1F02040201110E", "02060A121F0202", "1F101E0101110E", "0608101E11110E", "1F010204080808",  # 0 1 2 3 4 5 6 7
    "0E11110E11110E", "0E11110F01020C", "000C0C000C0C00", "000C0C000C0408", "02040810080402", "00001F001F0000", "08040201020408", "0E110102040004",  # 8 9 : ; < = > ?
    "0E11010D15150E", "0E1111111F1111", "1E11111E11111E", "0E11101010110E", "1C12111111121C", "1F10101E10101F", "1F10101E101010", "0E11101711110F",  # @ A B C D E F G
    "1111111F111111", "0E04040404040E", "0702020202120C", "11121418141211", "1010101010101F", "111B1515111111", "11111915131111", "0E11111111110E",  # H I J K L M N O
    "1E11111E101010", "0E11111115120D", "1E11111E141211", "0F10100E01011E", "1F040404040404", "1111111111110E", "11111111110A04", "1111111515150A",  # P Q R S T U V W
    "11110A040A1111", "1111110A040404", "1F01020408101F", "0E08080808080E", "00100804020100", "0E02020202020E", "040A1100000000", "0000000000001F",  # X Y Z [ \ ] ^ _
    "08040200000000", "00000E010F110F", "1010161911111E", "00000E1010110E", "01010D1311110F", "00000E111F100E", "0609081C080808", "000F11110F010E",  # ` a b c d e f g
    "10101619111111", "04000C0404040E", "0200060202120C", "10101214181412", "0C04040404040E", "00001A15151111", "00001619111111", "00000E1111110E",  # h i j k l m n o
    "00001E111E1010", "00000D130F0101", "00001619101010", "00000E100E011E", "08081C08080906", "0000111111130D", "00001111110A04", "0000111115150A",  # p q r s t u v w
    "0000110A040A11", "000011110F010E", "00001F0204081F", "02040408040402", "04040404040404", "08040402040408", "00000815020000",  # x y z { | } ~
]
assert len(_GLYPHS) == 95 and all(len(g) == 14 for g in _GLYPHS)
_DESCENDERS = {"g": "00000F1111110F010E", "j": "02000602020202120C", "p": "00001E1111111E1010",
               "q": "00000F1111110F0101", "y": "0000111111110F010E"}


def _bitmap(hexrows: str) -> np.ndarray:
    rows = [int(hexrows[j:j + 2], 16) for j in range(0, len(hexrows), 2)]
    rows += [0] * (9 - len(rows))
    return np.array([[(r >> (4 - c)) & 1 for c in range(5)] for r in rows], bool)


_FONT: dict[str, np.ndarray] = {chr(32 + i): _bitmap(_DESCENDERS.get(chr(32 + i), g)) for i, g in enumerate(_GLYPHS)}

GLYPH_W, GLYPH_H = 5, 9

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BLACK: Color = (0, 0, 0)
GREY: Color = (200, 200, 200)
STRIPE: Color = (242, 242, 242)
DARK: Color = (90, 90, 90)
GREEN: Color = (46, 160, 67)
RED: Color = (207, 34, 46)


def text_width(text: str, scale: int = 1) -> int:
    """Width in pixels of ``text`` drawn at ``scale`` (one blank column between glyphs)."""
    return max(0, len(text) * (GLYPH_W + 1) - 1) * scale


def draw_text(img: np.ndarray, x: int, y: int, text: str, color: Color = BLACK, scale: int = 1) -> None:
    """Draw ``text`` with its top-left corner at (x, y) into img (H, W, 3); clipped at the edges."""
    h, w = img.shape[:2]
    for ch in text:
        glyph = _FONT.get(ch, _FONT["?"])
        if scale > 1:
            glyph = glyph.repeat(scale, 0).repeat(scale, 1)
        gh, gw = glyph.shape
        y0, x0 = max(y, 0), max(x, 0)
        y1, x1 = min(y + gh, h), min(x + gw, w)
        if y0 < y1 and x0 < x1:
            img[y0:y1, x0:x1][glyph[y0 - y:y1 - y, x0 - x:x1 - x]] = color
        x += (GLYPH_W + 1) * scale


def fill(img: np.ndarray, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
    """Fill the rectangle [x0, x1) x [y0, y1), clipped to the image."""
    h, w = img.shape[:2]
    xa, xb = sorted((x0, x1))
    ya, yb = sorted((y0, y1))
    img[max(ya, 0):min(yb, h), max(xa, 0):min(xb, w)] = color


def encode_png(img: np.ndarray) -> bytes:
    """The bytes of an 8-bit RGB PNG of ``img`` (H, W, 3) uint8."""
    img = np.ascontiguousarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"encode_png: expected a (H, W, 3) uint8 array, got {img.shape} {img.dtype}")
    h, w = img.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"encode_png: the image must be at least 1x1, got {w}x{h}")

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    # Each scanline is prefixed with filter type 0 (None).
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)], axis=1).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit, truecolour, deflate, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def write_png(path: str | os.PathLike, img: np.ndarray) -> None:
    """Write ``img`` (H, W, 3) uint8 to ``path`` as a PNG."""
    data = encode_png(img)
    with open(path, "wb") as f:
        f.write(data)


def _tick(e: int) -> str:
    return f"{2 ** e}x" if e >= 0 else f"1/{2 ** -e}x"


def ratio_chart(labels: Sequence[str], ratios: Sequence[float | None], title: str, note: str = "",
                scale: int = 2) -> np.ndarray:
    """A horizontal bar per label, on a log2 axis centred on a line at 1.0x: bars to the right
    (green) where the ratio is above 1, to the left (red) where below. Returns (H, W, 3) uint8.

    ratios: PyTorch time / ours (> 1: ours faster); None or non-finite entries read "n/a".
    """
    if len(labels) != len(ratios):
        raise ValueError(f"ratio_chart: {len(labels)} labels but {len(ratios)} ratios")
    if scale < 1:
        raise ValueError(f"ratio_chart: scale must be >= 1, got {scale}")
    s = scale
    line_h = (GLYPH_H + 2) * s
    row_h = line_h + 3 * s
    pad = 6 * s
    ok = [r is not None and math.isfinite(r) and r > 0 for r in ratios]
    finite = [r for r, good in zip(ratios, ok) if good]
    lo = min([-2] + [math.floor(math.log2(r)) for r in finite])
    hi = max([2] + [math.ceil(math.log2(r)) for r in finite])
    lo, hi = max(lo, -6), min(hi, 6)  # 1/64x .. 64x; beyond that a bar is clipped at the edge
    values = [f"{r:.2f}x" if good else "n/a" for r, good in zip(ratios, ok)]
    label_w = max([text_width(t, s) for t in labels] + [0])
    value_w = max([text_width(t, s) for t in values] + [0])
    plot_w = max(240 * s, 48 * s * (hi - lo))
    x_plot = pad + label_w + pad
    x_value = x_plot + plot_w + pad
    width = max(x_value + value_w + pad, pad + text_width(title, s) + pad, pad + text_width(note, s) + pad)
    y_rows = pad + line_h + (line_h if note else 0) + pad
    y_axis = y_rows + row_h * len(labels)
    height = y_axis + pad + line_h + pad
    img = np.full((height, width, 3), 255, np.uint8)
    draw_text(img, pad, pad, title, BLACK, s)
    if note:
        draw_text(img, pad, pad + line_h, note, DARK, s)

    def xpos(v: float) -> int:
        return x_plot + round((v - lo) / (hi - lo) * (plot_w - 1))

    for i in range(1, len(labels), 2):  # zebra rows guide the eye from label to bar to value
        fill(img, pad, y_rows + i * row_h, width - pad, y_rows + (i + 1) * row_h, STRIPE)
    right = -1
    for e in range(lo, hi + 1):  # grid and tick labels at powers of two, labels never overlapping
        x = xpos(e)
        fill(img, x, y_rows, x + max(1, s // 2), y_axis, GREY)
        tick = _tick(e)
        x0 = x - text_width(tick, s) // 2
        if x0 > right + 2 * s:
            draw_text(img, x0, y_axis + pad // 2, tick, DARK, s)
            right = x0 + text_width(tick, s)
    x1 = xpos(0)
    for i, (label, r, good, value) in enumerate(zip(labels, ratios, ok, values)):
        y = y_rows + i * row_h
        ty = y + (row_h - GLYPH_H * s) // 2
        draw_text(img, pad + label_w - text_width(label, s), ty, label, BLACK, s)
        draw_text(img, x_value, ty, value, BLACK if good else DARK, s)
        if good:
            v = min(max(math.log2(r), lo), hi)
            fill(img, x1, y + 2 * s, xpos(v) + (1 if r >= 1 else 0), y + row_h - 2 * s, GREEN if r >= 1 else RED)
    fill(img, x1 - s // 2, y_rows - s, x1 - s // 2 + max(1, s), y_axis + s, BLACK)  # the 1.0x line
    return img
