"""The shape grids every backend runs against the oracle (and against torch when installed).

Each grid covers batch 1 and 0, odd sizes, sizes off block multiples, stride > 1, padding,
dilation, kernels as large as the padded input, 1x1 kernels and the documents' layer shapes.
"""

from __future__ import annotations

# conv: (N, C, H, W, K, R, S, stride, padding, dilation, bias)
CONV = [
    (1, 1, 5, 5, 1, 3, 3, 1, 0, 1, True),            # batch 1, smallest
    (0, 3, 7, 7, 4, 3, 3, 1, 1, 1, True),            # empty batch
    (2, 3, 7, 9, 5, 3, 3, 1, 0, 1, True),            # odd sizes
    (2, 1, 28, 28, 32, 3, 3, 1, 0, 1, True),         # documents' conv 1
    (3, 32, 13, 13, 64, 3, 3, 1, 0, 1, True),        # documents' conv 2
    (2, 64, 5, 5, 64, 3, 3, 1, 0, 1, True),          # documents' conv 3 (variant)
    (2, 4, 11, 10, 6, 3, 5, (2, 3), (1, 2), 1, True),  # stride, rectangular padding
    (2, 3, 9, 9, 4, 3, 3, 1, 2, 2, False),           # dilation, no bias
    (2, 2, 5, 6, 3, 7, 8, 1, 1, 1, True),            # kernel == padded input
    (2, 5, 6, 7, 3, 1, 1, 1, 0, 1, True),            # 1x1
    (2, 5, 6, 7, 3, 1, 1, 2, 0, 1, False),           # 1x1, stride 2
    (2, 3, 8, 8, 4, 4, 4, 1, "same", 1, True),       # 'same' with an even kernel (asymmetric)
    (2, 3, 8, 7, 4, 3, 3, 1, "same", 2, True),       # 'same' with dilation
    (1, 17, 5, 5, 19, 3, 3, 3, 1, 1, True),          # stride 3, odd channel counts
    (3, 2, 1, 40, 3, 1, 5, 1, "valid", 1, True),     # one-row image
    (2, 3, 1, 1, 4, 1, 1, 1, 0, 1, True),            # 1x1 image
    (1, 7, 33, 31, 9, 5, 3, (1, 2), (2, 1), (1, 2), True),  # everything at once, off multiples
    # The direct kernels (AVX-512): channel counts off 16 (masked lanes), several row tiles,
    # more than one channel block, padding wider than the kernel (dx crops dy).
    (2, 5, 9, 8, 20, 3, 3, 1, 1, 1, True),
    (2, 24, 6, 30, 40, 3, 3, 1, (2, 1), 1, True),
    (1, 8, 6, 6, 80, 3, 3, 1, 0, 1, True),
    (1, 16, 4, 5, 16, 2, 2, 1, 2, 1, False),
    (2, 1, 9, 12, 20, 3, 3, 1, 0, 1, True),          # one channel, 20 filters (a partial lane block), odd output
    # One input channel, 3x3 (AVX-512: columns in vectors, 4 filters at a time): padding, three
    # column vectors with a tail, filters off 4; one image in bands of rows, no bias.
    (3, 1, 11, 37, 7, 3, 3, 1, 1, 1, True),
    (1, 1, 20, 18, 6, 3, 3, 1, "same", 1, False),
    # dx of unpadded 3-wide kernels on dy itself (full-correlation kernel): the narrowest dx
    # row (one dy column), the widest tile for 1 and 3 channel vectors, row padding only.
    (2, 20, 7, 3, 8, 3, 3, 1, 0, 1, True),
    (1, 16, 4, 12, 24, 3, 3, 1, 0, 1, True),
    (1, 48, 6, 8, 16, 3, 3, 1, (1, 0), 1, False),
    # Direct-kernel bands: at least 4 items a thread with whole images a band (forward, and dx
    # on dy itself), and rows capped by the 64 KiB band scratch (a wide image, 2 rows a band,
    # and one image a dW chunk).
    (9, 8, 9, 9, 20, 3, 3, 1, 1, 1, True),
    (8, 16, 7, 7, 24, 3, 3, 1, 0, 1, False),
    (8, 4, 7, 102, 64, 3, 3, 1, 0, 1, True),
    # dW over image chunks (~256 KiB of x and dy each): 2 + 1 images a thread here.
    (6, 4, 22, 22, 64, 3, 3, 1, 0, 1, True),
    # Numba's direct shallow forward (_numba_simd.conv_rows: 16 columns a step, the last step
    # moved back to the row's end): the variant's conv 1 (3 channels, depth 27); rows of one
    # step (rectangular taps, no bias), two whole steps, and 17 columns; an even 'same'
    # kernel, padded only bottom and right, which must take the column path.
    (2, 3, 32, 32, 32, 3, 3, 1, 0, 1, True),
    (1, 2, 5, 20, 5, 2, 5, 1, "valid", 1, False),
    (2, 1, 6, 34, 3, 3, 3, 1, 0, 1, True),
    (1, 1, 4, 19, 4, 3, 3, 1, 0, 1, True),
    (1, 2, 6, 20, 3, 2, 2, 1, "same", 1, True),
]

# pool: (N, C, H, W, kernel, stride, padding)
POOL = [
    (2, 3, 8, 8, 2, None, 0),
    (1, 1, 5, 5, 2, None, 0),                # odd size: last row/column dropped
    (2, 32, 26, 26, 2, None, 0),             # documents' pool 1
    (2, 64, 11, 11, 2, None, 0),             # documents' pool 2 (odd)
    (1, 2, 5, 39, 2, None, 0),               # 2x2 SIMD rows: two full blocks of 8 + a tail of 3
    (1, 3, 17, 16, 2, None, 0),              # AVX-512 planes: 8 outputs a row (two rows a step), odd H
    (1, 3, 7, 7, 2, None, 0),                # 3 output rows: a step across two planes, then a plane alone
    (2, 2, 6, 18, 2, None, 0),               # 9 outputs a row: one row a step
    (2, 3, 2, 3, 2, None, 0),                # one window a plane
    (2, 3, 2, 34, 2, None, 0),               # Numba's in-register planes: 17 outputs (two vectors)
    (1, 2, 2, 65, 2, None, 0),               # ... the most outputs (32), odd W
    (3, 1, 3, 65, 2, None, 0),               # ... 13 input vectors
    (2, 3, 7, 9, 3, 2, 1),                   # overlapping windows with padding
    (2, 2, 6, 7, (2, 3), (1, 2), (1, 1)),    # rectangular everything
    (0, 3, 4, 4, 2, None, 0),                # empty batch
    (2, 2, 4, 4, 6, 1, 1),                   # kernel == padded input
    (1, 1, 3, 3, 3, 1, 1),                   # every window clipped
    (2, 3, 9, 9, 1, 1, 0),                   # 1x1 window
]

# linear: (x shape, OUT, bias)
LINEAR = [
    ((1, 5), 3, True),
    ((0, 5), 3, True),
    ((7, 13), 11, True),
    ((2, 3, 4, 16), 9, False),               # leading batch dims
    ((16,), 4, True),                        # unbatched
    ((32, 1600), 64, True),                  # documents' Dense(64)
    ((32, 64), 10, True),                    # documents' Dense(10)
    ((37, 129), 65, True),                   # off block multiples
    ((256, 1600), 64, True),                 # Dense(64) at batch 256: dot products past 64 rows
    ((130, 40), 7, False),                   # many rows, few outputs, off block multiples
    ((67, 33), 65, True),                    # many rows and outputs: the packed GEMM
    ((5, 150), 16, True),                    # dw outer products: 6 + 6 + 4 outputs x 64 + 64 + 22 inputs
]

# softmax: (shape, dim)
SOFTMAX = [
    ((1, 1), 1), ((4, 10), 1), ((4, 10), 0), ((3, 5, 7), 1), ((3, 5, 7), -1),
    ((3, 5, 7), 0), ((0, 5), 1), ((2, 1000), 1), ((6,), 0), ((2, 3, 4, 5), 2),
]

# cross entropy: (N, classes). 16 / 17 classes: one whole SIMD vector / one and a tail;
# 2500 rows: the forward's float64 sum runs in 3 blocks of rows (and threads).
CROSS_ENTROPY = [(1, 1), (4, 10), (33, 7), (0, 5), (32, 10), (3, 16), (2, 17), (5, 1000), (2500, 3)]

# elementwise shapes
ELEMENTWISE = [(0,), (1,), (7, 3, 5), (1000,), (32, 64, 11, 11)]
