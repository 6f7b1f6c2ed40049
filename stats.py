"""Statistics of a paired comparison: the Wilson score interval of an accuracy and the exact
McNemar test of two classifiers scored on the same images. Pure Python (no scipy)."""
import math

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval


def wilson_interval(correct, total, z=Z95):
    """The Wilson score interval (low, high) of the proportion correct / total (Wilson 1927): unlike
    the normal approximation it stays inside [0, 1] and is not empty at 0 or `total` correct."""
    if total <= 0:
        return 0.0, 1.0  # no images: the proportion is unknown
    p, z2 = correct / total, z * z
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / (1 + z2 / total)
    # at 0 or `total` correct one end is exactly 0 or 1, which the subtraction only approximates
    return (0.0 if correct == 0 else centre - half), (1.0 if correct == total else centre + half)


def mcnemar_exact(b, c):
    """The exact two-sided McNemar p-value of b and c discordant pairs (images only the first model gets
    right, and only the second): under "no difference" each discordant pair is a fair coin, so p is twice
    the smaller binomial(b + c, 1/2) tail, capped at 1. The tail is summed in integers, so it is exact
    for any n (the only rounding is the final division; a p below ~1e-308 becomes 0.0)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b}, {c}")
    n, k = b + c, min(b, c)
    term, tail = 1, 1  # C(n, 0); C(n, i + 1) = C(n, i) (n - i) / (i + 1) is an integer at every step
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, 2 * tail / 2 ** n)
