"""A CPU platform for verl 0.9.x, so that real GRPO runs (vLLM CPU rollouts, FSDP2 LoRA updates) work without a GPU.

verl resolves its accelerator through ``verl.plugin.platform`` and ships only CUDA/NPU/ROCm backends. This
module registers a ``cpu`` backend (gloo collectives, tensors on "cpu", shared-memory weight sync, the
CUDA-style memory/RNG calls answered for the process) — but only when a run asks for it::

    VERL_PLATFORM=cpu VERL_USE_EXTERNAL_MODULES=llm4icd_plugins.verl.cpu python -m verl.trainer.main_ppo ...

verl imports the modules named in ``VERL_USE_EXTERNAL_MODULES`` on ``import verl`` in every process (driver,
Ray workers, vLLM workers). Without ``VERL_PLATFORM=cpu`` importing this module changes nothing, so GPU recipes
are unaffected. See ``recipes/tiny/grpo/run_cpu.sh`` for the other CPU-only settings.
"""

from __future__ import annotations

import functools
import os
import resource
from contextlib import contextmanager
from types import ModuleType
from typing import Any

PLATFORM_NAME = "cpu"
ENGINE_DEVICE = "cuda"
"""verl registers its FSDP engines for devices cuda/npu only; the engine code itself is device-agnostic torch."""


def requested() -> bool:
    """True when this process runs verl on the CPU (``VERL_PLATFORM=cpu``)."""
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME


def _rss_bytes() -> int:
    """Resident memory of this process (what a GPU's "allocated" memory stands for on a CPU)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _mem_info() -> tuple[int, int]:
    """(available, total) host memory in bytes, like ``torch.cuda.mem_get_info``."""
    import psutil

    mem = psutil.virtual_memory()
    return int(mem.available), int(mem.total)


class _CPUDeviceModule(ModuleType):
    """Stands in for ``torch.cuda``: ``torch.cpu``'s calls plus the CUDA-only ones verl makes, answered for the host."""

    def __init__(self) -> None:
        super().__init__("llm4icd_plugins.verl.cpu.device")

    def __getattr__(self, name: str) -> Any:
        import torch.cpu

        return getattr(torch.cpu, name)

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def set_device(device: Any) -> None:
        return None

    @staticmethod
    def synchronize(device: Any = None) -> None:
        return None

    @staticmethod
    def empty_cache() -> None:
        return None

    @staticmethod
    def ipc_collect() -> None:
        return None

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
        return None

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        import platform

        return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"

    @staticmethod
    def mem_get_info(device: Any = None) -> tuple[int, int]:
        return _mem_info()

    @staticmethod
    def memory_allocated(device: Any = None) -> int:
        return _rss_bytes()

    @staticmethod
    def memory_reserved(device: Any = None) -> int:
        return _rss_bytes()

    @staticmethod
    def max_memory_allocated(device: Any = None) -> int:
        return _peak_rss_bytes()

    @staticmethod
    def max_memory_reserved(device: Any = None) -> int:
        return _peak_rss_bytes()

    @staticmethod
    def reset_peak_memory_stats(device: Any = None) -> None:
        return None

    @staticmethod
    def get_rng_state(device: Any = None):
        import torch

        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state, device: Any = None) -> None:
        import torch

        torch.set_rng_state(state)

    @staticmethod
    def manual_seed(seed: int) -> None:
        import torch

        torch.manual_seed(seed)

    manual_seed_all = manual_seed


DEVICE_MODULE = _CPUDeviceModule()


class _PlatformCPUMethods:
    """The methods of ``PlatformCPU``, apart from verl's base class so that this module imports without verl."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return requested()

    def current_device(self) -> str:  # a device for tensor.to(...), not an index
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        import torch

        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        self.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[None, None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray still hands each worker one (fake) GPU slot and sets this variable; nothing reads it on a CPU.
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        # verl's resource-pool check counts "GPU" slots only, so a CPU run declares num_gpus=1 to Ray.
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False  # actor→vLLM weights go through shared memory instead of CUDA IPC

    def cudart(self) -> None:
        return None


def _platform_class():
    """Build the ``PlatformBase`` subclass lazily: verl is imported only when a CPU run needs it."""
    from verl.plugin.platform.platform_base import PlatformBase

    class PlatformCPU(_PlatformCPUMethods, PlatformBase):
        """verl on the host CPU: gloo collectives, one "device" per Ray worker, shared-memory weight sync."""

    return PlatformCPU


def _use_gloo_process_group() -> None:
    """Make verl's Ray workers start a plain ``gloo`` process group.

    verl asks for ``"cpu:gloo,<device>:<backend>"``, which torch rejects when the device is the CPU itself
    ("Duplicate device type cpu"). Callers import the function by name later (engine_workers), so patching
    the module attribute while ``import verl`` runs reaches them all.
    """
    import verl.utils.distributed as distributed

    original = distributed.initialize_global_process_group_ray
    if getattr(original, "_llm4icd_cpu", False):
        return

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return original(timeout_second=timeout_second, backend=backend or "gloo")

    initialize_global_process_group_ray._llm4icd_cpu = True
    distributed.initialize_global_process_group_ray = initialize_global_process_group_ray


def register() -> type:
    """Register the ``cpu`` platform with verl, route engine selection to its FSDP engines and make
    process groups gloo-only; returns the platform class. Idempotent."""
    from verl.plugin.platform.platform_manager import PlatformRegistry

    cls = PlatformRegistry.get(PLATFORM_NAME)
    if cls is None:
        cls = PlatformRegistry.register(platform=PLATFORM_NAME)(_platform_class())
    os.environ.setdefault("VERL_ENGINE_DEVICE", ENGINE_DEVICE)
    _use_gloo_process_group()
    return cls


if requested():
    register()
