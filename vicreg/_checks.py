"""Input checks and array-namespace dispatch.

Everything here looks only at metadata (type, shape, dtype, device), never at values: a data-dependent
check would force a device synchronisation and break ``jax.jit``. NaN or Inf inside the arrays therefore
propagates to the loss.
"""

from __future__ import annotations

import decimal
import math
import numbers
from typing import Any

import array_api_compat


def _library(x: Any) -> str:
    """The top-level module of ``x``'s type: ``"numpy"``, ``"torch"``, ``"jax"``/``"jaxlib"``, ``"dask"``, ..."""
    return type(x).__module__.split(".")[0]


CONVENTIONS = ("official", "paper")
"""The values of the ``convention`` keyword.

``"official"`` (the default) computes what ``facebookresearch/vicreg`` computes: the invariance is
``mean((z1 - z2)^2)`` over all ``n d`` elements and the variance term averages the two views' hinges.
``"paper"`` follows the paper's equations: the invariance is ``(1/n) sum_i ||z1_i - z2_i||^2`` (``d`` times
the official one) and the two views' hinges are summed (twice the official term). The covariance term is
the same in both.
"""

PRECISIONS = ("highest", "high", "medium")
"""The values of the ``precision`` keyword: the precision of the loss's float32 matrix products, named as
PyTorch's ``torch.set_float32_matmul_precision`` and JAX's ``precision`` name theirs.

``"highest"`` runs them in IEEE float32. ``"medium"`` rounds each product's two inputs to bfloat16 (8
significant bits) and accumulates and returns the product in float32: one pass on the tensor cores of a
GPU (PyTorch's ``torch.mm(..., out_dtype=torch.float32)`` on CUDA, JAX's
``lax.DotAlgorithmPreset.BF16_BF16_F32``), rounded the same way everywhere else, so that a CPU computes what
a GPU does. ``"high"`` is bf16x3: each input carried as two bfloat16 numbers, ``x = x_h + x_l``, and the
product ``a_h b_h + (a_h b_l + a_l b_h)`` from three such passes (two for the symmetric Gram matrix),
about ``2^-16`` relative per term. Everything but the products (centring, variances, the hinge, the
invariance, every sum) stays in float32 at every level, and the exact-column scheme of the covariance term
is the same. float64 inputs are computed in float64 at every level.

The default (``precision=None``) is ``"high"`` under ``torch.autocast`` and for bfloat16 or float16 JAX
inputs, where the official formulation runs its products in bfloat16 or float16 too (``"high"`` is more
accurate than that in every case of the precision sweep; ``"medium"`` is not), and ``"highest"``
everywhere else.
"""

_COEFFICIENTS = ("sim_coeff", "std_coeff", "cov_coeff", "variance_target", "eps")


def coefficient(name: str, value: Any) -> float:
    """``value`` as a finite, non-negative Python float; ``TypeError``/``ValueError`` naming ``name``.

    Any real number is accepted: ``int``, ``float``, ``fractions.Fraction``, ``decimal.Decimal``, NumPy
    scalars and 0-d real arrays (NumPy, PyTorch, ...). Normalising once to a Python float keeps the
    result's dtype a function of the inputs alone (a NumPy ``float64`` coefficient would otherwise promote a
    float32 loss) and keeps coefficients static under ``jax.jit``.
    """
    if isinstance(value, bool) or not _is_real(value):
        raise TypeError(
            f"vicreg: {name} must be a real number (a Python float or int, or a NumPy/PyTorch scalar), "
            f"got {type(value).__name__} ({value!r})"
        )
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"vicreg: {name} is too large for a float: {_short(value)}") from None
    except ValueError:  # e.g. a signalling NaN Decimal
        raise ValueError(f"vicreg: {name} must be finite, got {value!r}") from None
    except Exception as error:  # e.g. a traced JAX array: coefficients must be concrete
        raise TypeError(
            f"vicreg: {name} must be a concrete real number (it is static configuration, not an array "
            f"of the computation), got {type(value).__name__}: {error}"
        ) from None
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"vicreg: {name} must be finite, got {value!r}")
    if number < 0:
        raise ValueError(f"vicreg: {name} must be non-negative, got {value!r}")
    return number


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-10:]} ({len(text)} characters)"


def _is_real(value: Any) -> bool:
    """A real number, or a 0-d array of a real (not boolean, not complex) dtype."""
    if isinstance(value, (numbers.Real, decimal.Decimal)):
        return True
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is None or dtype is None or tuple(shape) != ():
        return False
    kind = getattr(dtype, "kind", None)  # NumPy, CuPy, JAX dtypes
    if kind is not None:
        return kind in "fiu"
    if hasattr(dtype, "is_complex"):  # PyTorch dtypes
        return not dtype.is_complex and str(dtype) != "torch.bool"
    return False


def check_options(
    sim_coeff: Any,
    std_coeff: Any,
    cov_coeff: Any,
    variance_target: Any,
    eps: Any,
    convention: Any,
    precision: Any = None,
) -> tuple[float, float, float, float, float]:
    """The five coefficients as Python floats (see :func:`coefficient`); ``ValueError`` for an unknown
    convention or precision, ``TypeError`` for a precision that is not a string or ``None``."""
    values = (sim_coeff, std_coeff, cov_coeff, variance_target, eps)
    floats = tuple(coefficient(name, value) for name, value in zip(_COEFFICIENTS, values))
    if not isinstance(convention, str) or convention not in CONVENTIONS:
        choices = ", ".join(repr(c) for c in CONVENTIONS)
        raise ValueError(f"vicreg: unknown convention {convention!r}; choose one of {choices}")
    if precision is not None:
        choices = ", ".join(repr(c) for c in PRECISIONS)
        if not isinstance(precision, str):
            raise TypeError(f"vicreg: precision must be None or one of {choices}, got {precision!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"vicreg: unknown precision {precision!r}; choose None (automatic) or one of {choices}")
    return floats  # type: ignore[return-value]


def check_flag(name: str, value: Any) -> None:
    """``TypeError`` unless ``value`` is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise TypeError(f"vicreg: {name} must be True or False, got {value!r}")


def namespace(*views: Any) -> Any:
    """The array namespace shared by the views (``z1``, ``z2``, ...); ``TypeError`` when there is none."""
    for name, z in zip(_names(len(views)), views):
        if not array_api_compat.is_array_api_obj(z):
            hint = f"{name}.toarray()" if hasattr(z, "toarray") else f"numpy.asarray({name})"
            raise TypeError(
                f"vicreg: {name} must be an array (NumPy, CuPy, PyTorch, JAX or another array-API "
                f"library), got {type(z).__name__}; convert it first, e.g. {hint}"
            )
    first = array_api_compat.array_namespace(views[0])
    for name, z in zip(_names(len(views))[1:], views[1:]):
        if array_api_compat.array_namespace(z) is not first:
            raise TypeError(
                f"vicreg: z1 and {name} come from different array libraries ({_library(views[0])} and "
                f"{_library(z)}); convert one to the other's library first, zero-copy where possible, e.g. "
                f"{name} = {_library(views[0])}.from_dlpack({name})"
            )
    return first


def _names(count: int) -> list[str]:
    """``["z1", "z2", ...]``: how the messages name the views."""
    return [f"z{i + 1}" for i in range(count)]


def _device(x: Any) -> Any:
    if _library(x) == "torch":  # direct, so that torch.compile traces no cached dispatch
        return x.device
    try:
        return array_api_compat.device(x)
    except Exception:  # e.g. tracers without a device: nothing to compare
        return None


def check_views(xp: Any, views: Any) -> None:
    """Raise ``ValueError``/``TypeError`` unless the views (``z1``, ``z2``, ...) are ``(n, d)`` (or
    ``(n, ..., d)``) real floating arrays of one shape on one device, with ``n >= 2``, ``d >= 1`` and no
    empty middle axis."""
    names = _names(len(views))
    for name, z in zip(names, views):
        check_kind(name, z)
        if z.ndim < 2:
            raise ValueError(
                f"vicreg: {name} must be 2-D (n samples, d features) or more, (n samples, ..., d features), "
                f"got shape {tuple(z.shape)}"
            )
        if any(not _known(size) for size in z.shape):
            raise ValueError(
                f"vicreg: {name} has a dimension of unknown size (shape {tuple(z.shape)}), which a lazy or "
                f"symbolic array leaves open; give it a concrete shape first (for dask, "
                f"{name}.compute_chunk_sizes())"
            )
        check_dtype(xp, name, z.dtype)
    z1 = views[0]
    for name, z in zip(names[1:], views[1:]):
        if tuple(z.shape) != tuple(z1.shape):
            raise ValueError(
                f"vicreg: z1 and {name} must have the same shape, got {tuple(z1.shape)} and {tuple(z.shape)}"
            )
    n, d = z1.shape[0], z1.shape[-1]
    if any(size is not None and size < 1 for size in z1.shape[1:-1]):
        raise ValueError(f"vicreg: the middle axes of (n, ..., d) must not be empty, got shape {tuple(z1.shape)}")
    if n is not None and n < 2:
        raise ValueError(f"vicreg: need at least 2 samples to estimate a variance, got n = {n}")
    if d is not None and d < 1:
        raise ValueError("vicreg: embeddings have zero features (d = 0)")
    first = _device(z1)
    for name, z in zip(names[1:], views[1:]):
        other = _device(z)
        if first is not None and other is not None and first != other:
            raise ValueError(
                f"vicreg: z1 and {name} are on different devices ({first} and {other}); move one to the other's"
            )


def _known(size: Any) -> bool:
    """Whether a dimension's size is a concrete number (dask gives NaN for an unknown one, ndonnx ``None``)."""
    return size is not None and not (isinstance(size, float) and math.isnan(size))


_EIGHT_BIT = "8-bit and smaller floating dtypes are not supported (too little range and precision for the statistics)"


def check_dtype(xp: Any, name: str, dtype: Any) -> None:
    """``TypeError`` naming ``dtype`` unless it is a real floating dtype of at least 16 bits: float16,
    bfloat16 (NumPy's through ml_dtypes too), float32, float64. Floats of 8 bits and fewer are refused."""
    try:
        floating = bool(xp.isdtype(dtype, "real floating"))
    except TypeError:  # a NumPy extension dtype (ml_dtypes): its type's name says what it is
        floating = _extension_float_bits(dtype) is not None
    if not floating:
        raise TypeError(
            f"vicreg: {name} must have a real floating dtype (float16, bfloat16, float32, float64), got {dtype}"
        )
    if _float_bits(xp, dtype) < 16:
        raise TypeError(f"vicreg: {name} has dtype {dtype}: {_EIGHT_BIT}; cast it to float32 or bfloat16 first")


def _extension_float_bits(dtype: Any) -> int | None:
    """The width of an ml_dtypes floating dtype in NumPy (``bfloat16``, ``float8_e4m3fn``, ...), else None."""
    if getattr(getattr(dtype, "type", None), "__module__", "").split(".")[0] != "ml_dtypes":
        return None
    name = getattr(dtype, "name", "")
    if name == "bfloat16":
        return 16
    if name.startswith(("float8", "float6", "float4")):
        return int(name[5])
    return None


def _float_bits(xp: Any, dtype: Any) -> int:
    bits = _extension_float_bits(dtype)
    return bits if bits is not None else int(xp.finfo(dtype).bits)


def check_kind(name: str, z: Any) -> None:
    """``TypeError`` for arrays of a supported library that the computation would get wrong or crash on:
    NumPy masked arrays and other ``ndarray`` subclasses (``numpy.matrix`` multiplies with ``*``), and
    sparse or nested PyTorch tensors. Each message says what to pass instead."""
    library = _library(z)
    if library == "numpy":
        import numpy as np  # already imported: the array is NumPy's

        if isinstance(z, np.ma.MaskedArray):
            raise TypeError(
                f"vicreg: {name} is a NumPy masked array, whose masked entries would count as data; "
                f"pass the rows to use as a plain array, e.g. {name}.data[~{name}.mask.any(axis=1)], "
                f"or {name}.filled(value)"
            )
        if isinstance(z, np.ndarray) and type(z) not in (np.ndarray, np.memmap):
            raise TypeError(
                f"vicreg: {name} is a {type(z).__name__}, a subclass of numpy.ndarray with its own "
                f"arithmetic; pass numpy.asarray({name})"
            )
    elif library == "sparse":
        raise TypeError(f"vicreg: {name} is a sparse array ({type(z).__name__}); pass {name}.todense()")
    elif library == "torch":
        if getattr(z, "is_nested", False):
            raise TypeError(
                f"vicreg: {name} is a nested tensor; pass a dense (n, d) tensor, e.g. "
                f"torch.cat({name}.unbind()) for rows of one width"
            )
        if str(getattr(z, "layout", "torch.strided")) != "torch.strided":
            raise TypeError(f"vicreg: {name} is a sparse tensor ({z.layout}); pass {name}.to_dense()")
        if type(z).__name__ == "MaskedTensor":
            raise TypeError(
                f"vicreg: {name} is a torch.masked.MaskedTensor, whose masked entries would count as "
                f"data; pass the rows to use as a plain tensor"
            )


def compute_dtype(xp: Any, *views: Any) -> Any:
    """The dtype the statistics are computed in: the views' common dtype, at least float32.

    float16 and bfloat16 have too little range for the second moments (a Gram entry of embeddings of
    magnitude 300 overflows float16), so they are computed in float32.
    """
    dtype = views[0].dtype
    for z in views[1:]:  # pairwise (torch.compile traces this; it does not trace a generator's unpacking)
        dtype = xp.result_type(dtype, z.dtype)
    if _float_bits(xp, dtype) < 32:
        dtype = xp.float32
    return dtype


def prepare(*views: Any) -> tuple[Any, ...]:
    """Check the views and cast them to the compute dtype. Returns ``(xp, z1, z2, ...)``."""
    xp = namespace(*views)
    check_views(xp, views)
    dtype = compute_dtype(xp, *views)
    return (xp, *(z if z.dtype == dtype else xp.astype(z, dtype) for z in views))


def zero_d(xp: Any, x: Any) -> Any:
    """``x`` as a 0-d array: NumPy reductions return scalars (``numpy.float64``), not arrays."""
    return xp.asarray(x) if array_api_compat.is_numpy_namespace(xp) else x
