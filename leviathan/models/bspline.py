"""Uniform B-spline bases on [0, 1] with local support.

G uniform intervals on [0, 1] and degree p give n_b = G + p basis functions B_0..B_{n_b-1} on the
clamped-free knot vector t_i = (i - p) / G, i = 0..G + 2p (the knots extend p intervals beyond
[0, 1] on each side, so that the basis is a partition of unity on all of [0, 1]).
A point y = x G in the span [s, s + 1) (s = 0..G-1) touches only B_s..B_{s+p}; their values are
the same polynomials of the local coordinate u = y - s for every span (uniform knots): their
coefficients come once from de Boor's recursion, and evaluating them is one small matmul
[1, u, .., u^p] @ C, so only p + 1 values per coordinate are ever computed.
"""

from __future__ import annotations

import functools

import torch


def knots(grid_size: int, degree: int) -> torch.Tensor:
    """The knot vector t_i = (i - p) / G, i = 0..G + 2p (float64; for checks against scipy)."""
    return (torch.arange(grid_size + 2 * degree + 1, dtype=torch.float64) - degree) / grid_size


def basis_polynomials(degree: int) -> torch.Tensor:
    """C (p+1, p+1) float64: on every span, B_{span+j}(u) = sum_a C[a, j] u^a.

    de Boor's triangular recursion (The NURBS Book, A2.2) run on polynomial coefficients; on
    uniform knots right[r+1] = (r+1) - u, left[j-r] = u - 1 + (j-r), and their sum is j.
    """
    def times_linear(poly: torch.Tensor, c: float, slope: float) -> torch.Tensor:  # (c + slope u) P
        out = c * poly
        out[1:] += slope * poly[:-1]
        return out

    zero = torch.zeros(degree + 1, dtype=torch.float64)
    values = [zero.clone()]
    values[0][0] = 1.0
    for j in range(1, degree + 1):  # raise the degree: j + 1 non-zeros of degree j
        saved, nxt = zero.clone(), []
        for r in range(j):
            temp = values[r] / j
            nxt.append(saved + times_linear(temp, r + 1.0, -1.0))
            saved = times_linear(temp, j - r - 1.0, 1.0)
        nxt.append(saved)
        values = nxt
    return torch.stack(values, dim=1)  # (power a, basis j)


@functools.lru_cache(maxsize=8)
def _coefficient_rows(degree: int) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(row) for row in basis_polynomials(degree).tolist())


@functools.lru_cache(maxsize=32)
def _coefficients_on(degree: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(_coefficient_rows(degree), dtype=dtype, device=device)


def coefficients(degree: int, like: torch.Tensor) -> torch.Tensor:
    """basis_polynomials(degree) on like's device and dtype: eagerly one cached tensor per
    (degree, device, dtype), so no step copies it to the GPU again; under torch.compile a
    constant of the graph (the cache is not traced)."""
    if torch.compiler.is_compiling():
        return torch.tensor(_constant_rows(degree), dtype=like.dtype, device=like.device)
    return _coefficients_on(degree, like.device, like.dtype)


@torch.compiler.assume_constant_result
def _constant_rows(degree: int) -> tuple[tuple[float, ...], ...]:
    return _coefficient_rows(degree)


def local_basis(x: torch.Tensor, grid_size: int, degree: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-zero basis values at x in [0, 1].

    x: (...) -> span (...) long in [0, G-1] and values (..., p+1): values[..., j] = B_{span+j}(x).
    Differentiable in x (within a span); x is clamped to [0, 1].
    """
    y = x.clamp(0.0, 1.0) * grid_size
    span = y.detach().floor().clamp_(0, grid_size - 1)
    u = y - span  # (...) local coordinate in [0, 1]
    powers = [torch.ones_like(u), u]
    for _ in range(2, degree + 1):
        powers.append(powers[-1] * u)
    powers = torch.stack(powers[: degree + 1], dim=-1)  # (..., p+1): u^0..u^p
    coeffs = coefficients(degree, x)  # (p+1, p+1)
    return span.long(), powers @ coeffs


def dense_basis(x: torch.Tensor, grid_size: int, degree: int) -> torch.Tensor:
    """All n_b basis values: x (...) -> (..., G + p), zeros outside the local support."""
    span, values = local_basis(x, grid_size, degree)
    index = span.unsqueeze(-1) + torch.arange(degree + 1, device=x.device)  # (..., p+1)
    out = values.new_zeros(*x.shape, grid_size + degree)
    return out.scatter(-1, index, values)


# ---- knot-centred, normalised bases (LEV's khronos form) --------------------------------------
def centred_local_basis(x: torch.Tensor, n_knots: int, degree: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The khronos basis: kappa = n_knots knots t_g = g / (kappa - 1) on [0, 1], basis function g
    the uniform degree-p B-spline centred on t_g (support (p + 1) knot spacings), the kappa values
    divided by their sum (near 0 and 1 the functions centred beyond [0, 1] are missing).

    x: (...) -> index (..., p+1) long in [0, kappa-1] and values (..., p+1) summing to 1;
    values[..., j] = B_{index[..., j]}(x), zero where the function lies outside [0, kappa-1].
    On the shifted coordinate s = x (kappa - 1) - (p - 1) / 2, functions span..span+p are
    non-zero with the same local polynomials as `local_basis`.
    """
    s = x.clamp(0.0, 1.0) * (n_knots - 1) - (degree - 1) / 2
    span = s.detach().floor()
    u = s - span  # (...) local coordinate in [0, 1)
    powers = [torch.ones_like(u), u]
    for _ in range(2, degree + 1):
        powers.append(powers[-1] * u)
    powers = torch.stack(powers[: degree + 1], dim=-1)  # (..., p+1)
    values = powers @ coefficients(degree, x)
    index = span.long().unsqueeze(-1) + torch.arange(degree + 1, device=x.device)  # (..., p+1)
    inside = (index >= 0) & (index < n_knots)
    values = values * inside
    values = values / values.sum(-1, keepdim=True)  # > 0: the nearest knot's function is inside
    return index.clamp(0, n_knots - 1), values


def centred_dense_basis(x: torch.Tensor, n_knots: int, degree: int) -> torch.Tensor:
    """All kappa values of the khronos basis: x (...) -> (..., kappa)."""
    index, values = centred_local_basis(x, n_knots, degree)
    out = values.new_zeros(*x.shape, n_knots)
    return out.scatter_add(-1, index, values)  # clamped indices carry zeros
