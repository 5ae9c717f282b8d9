"""Argument checks shared by the pose maths: one clear ValueError per bad input."""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float64)


def check_tensor(name: str, x, trailing: tuple[int, ...], *, min_dims: int | None = None) -> torch.Tensor:
    """Check that `x` is a finite float32/float64 tensor whose last dims equal `trailing`.

    `min_dims` is the least number of dims (default: len(trailing) + 1, i.e. batched).
    Raises ValueError naming `name`, the shape expected and the shape got.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"{name} must be a torch.Tensor of shape (N, {', '.join(map(str, trailing))}), got {type(x).__name__}"
        )
    need = len(trailing) + 1 if min_dims is None else min_dims
    want = "(N, " + ", ".join(map(str, trailing)) + ")" if need > len(trailing) else str(tuple(trailing))
    if x.dim() < need or tuple(x.shape[x.dim() - len(trailing) :]) != tuple(trailing):
        raise ValueError(f"{name} must have shape {want}, got {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got {x.dtype} with shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN/inf values (shape {tuple(x.shape)})")
    return x
