"""Devices and precision, what this machine offers, and what running out of memory says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shape_e_blender.core.errors import (
    CANCELLED,
    DEVICE_UNAVAILABLE,
    INVALID_PARAMS,
    OUT_OF_MEMORY,
    ShapEError,
)
from shape_e_blender.worker.models.devices import (
    DeviceChoice,
    device_report,
    map_runtime_error,
    resolve_device,
    versions,
)

CUDA = torch.cuda.is_available()


def test_auto_picks_the_best_device_and_its_precision() -> None:
    choice = resolve_device("auto", "auto")
    if CUDA:
        assert choice == DeviceChoice(f"cuda:{torch.cuda.current_device()}", "fp16")
    elif torch.backends.mps.is_available():
        assert choice == DeviceChoice("mps", "fp32")
    else:
        assert choice == DeviceChoice("cpu", "fp32")
    assert resolve_device("cpu", "auto") == DeviceChoice("cpu", "fp32")
    assert resolve_device("CPU", "BF16") == DeviceChoice("cpu", "bf16")


@pytest.mark.skipif(CUDA, reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_device_unavailable_naming_what_is_there() -> None:
    for request in ("cuda", "cuda:1"):
        with pytest.raises(ShapEError) as err:
            resolve_device(request, "auto")
        assert err.value.code == DEVICE_UNAVAILABLE
        assert err.value.field == "device"
        assert request in err.value.message
        assert "cpu" in err.value.hint


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_cuda_index_beyond_the_gpus_is_device_unavailable() -> None:
    assert resolve_device("cuda", "auto").device == f"cuda:{torch.cuda.current_device()}"
    with pytest.raises(ShapEError) as err:
        resolve_device(f"cuda:{torch.cuda.device_count()}", "auto")
    assert err.value.code == DEVICE_UNAVAILABLE and "cuda:0" in err.value.hint


def test_fp16_on_the_cpu_is_refused_with_the_alternatives() -> None:
    with pytest.raises(ShapEError) as err:
        resolve_device("cpu", "fp16")
    assert err.value.code == INVALID_PARAMS and err.value.field == "precision"
    assert "bf16" in err.value.hint and "fp32" in err.value.hint


@pytest.mark.parametrize(
    ("device", "precision", "field"), [("tpu", "auto", "device"), ("cpu", "fp8", "precision")]
)
def test_unknown_values_are_invalid_params(device: str, precision: str, field: str) -> None:
    with pytest.raises(ShapEError) as err:
        resolve_device(device, precision)
    assert err.value.code == INVALID_PARAMS and err.value.field == field


def test_device_report_lists_the_cpu_last() -> None:
    report = device_report()
    assert report[-1]["name"] == "cpu" and report[-1]["type"] == "cpu"
    for entry in report:
        assert set(entry) == {"name", "type", "label", "memory_total", "memory_free"}
        for key in ("memory_total", "memory_free"):
            assert entry[key] is None or (isinstance(entry[key], int) and entry[key] > 0)
    assert [e["type"] == "cuda" for e in report].count(True) == (
        torch.cuda.device_count() if CUDA else 0
    )


def test_versions_name_the_libraries_that_shape_a_result() -> None:
    import diffusers
    import numpy
    import transformers

    v = versions()
    assert v["torch"] == torch.__version__
    assert v["diffusers"] == diffusers.__version__
    assert v["transformers"] == transformers.__version__
    assert v["numpy"] == numpy.__version__
    assert v["python"].count(".") == 2
    assert ("cuda" in v) == bool(torch.version.cuda)


def test_out_of_memory_maps_to_a_hint_per_stage() -> None:
    # A real allocation failure of this machine's cpu allocator.
    with pytest.raises(RuntimeError) as real:
        torch.empty(1 << 62, dtype=torch.uint8)
    mapped = map_runtime_error(real.value, "decoding")
    assert mapped is not None and mapped.code == OUT_OF_MEMORY
    assert "decoding" in mapped.message and "grid_size" in mapped.hint


def test_numpy_out_of_memory_maps_too() -> None:
    # numpy's own allocation failure (a grid too large for this machine's memory) is MemoryError.
    with pytest.raises(MemoryError) as real:
        np.empty(1 << 62, dtype=np.uint8)
    mapped = map_runtime_error(real.value, "decoding")
    assert mapped is not None and mapped.code == OUT_OF_MEMORY and "grid_size" in mapped.hint


def test_cuda_out_of_memory_constructed_here_maps_to_fp16_or_fewer_variants() -> None:
    # Constructed, not raised by a GPU: this machine may have none.
    exc = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    mapped = map_runtime_error(exc, "sampling")
    assert mapped is not None and mapped.code == OUT_OF_MEMORY
    assert mapped.hint == "choose precision fp16 or fewer variants"
    assert "sampling" in mapped.message and "2.00 GiB" in mapped.message


def test_other_errors_are_not_mapped() -> None:
    assert map_runtime_error(ValueError("bad"), "sampling") is None
    assert map_runtime_error(RuntimeError("shape mismatch"), "decoding") is None
    own = ShapEError(CANCELLED, "cancelled")
    assert map_runtime_error(own, "sampling") is own
