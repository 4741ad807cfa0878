"""The quantization pass of a conversion: ``semantics.quantize`` (where the backend registry can also
reach it), under the name it has always had in conversion/."""

from ..semantics.quantize import (DEFAULTS, FORMAT, SAT_KEYS, describe, ensure_quantized, is_quantized,  # noqa: F401
                                  quantize)

__all__ = ["quantize", "is_quantized", "ensure_quantized", "describe", "SAT_KEYS", "DEFAULTS", "FORMAT"]
