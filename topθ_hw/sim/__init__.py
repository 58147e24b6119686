"""Simulator stage: devices as data, workloads from real masks, a SimPy model of attention kernels.

``load_device`` is the only door to device numbers; ``kernel_workload`` / ``workload_from_stats``
turn shapes or engine statistics into kernel passes; ``simulate_call`` / ``simulate_kernel`` /
``simulate_stats`` time them. Accelerators (a device with a ``[dma]`` section) run the DMA-block
model of ``dma.py``; ``dma_kernel_for(device, block_keys=, buffers=)`` configures their kernel.
"""


__all__ = ["Device", "DmaKernel", "dma_kernel_for", "known_devices", "load_device", "simulate_call", "simulate_kernel", "simulate_stats",
           "workload_from_stats", "decode_call", "kernel_workload", "prefill_call"]

from topθ_hw.lazy import lazy_attributes  # noqa: E402

# Imported on first use (PEP 562), so that `toptheta --help` does not load numpy, zarr or SimPy.
_LAZY = {
    'DmaKernel': 'topθ_hw.sim.dma_kernel',
    'dma_kernel_for': 'topθ_hw.sim.dma_kernel',
    'Device': 'topθ_hw.sim.hardware',
    'known_devices': 'topθ_hw.sim.hardware',
    'load_device': 'topθ_hw.sim.hardware',
    'simulate_call': 'topθ_hw.sim.simulate',
    'simulate_kernel': 'topθ_hw.sim.simulate',
    'simulate_stats': 'topθ_hw.sim.stats',
    'workload_from_stats': 'topθ_hw.sim.stats',
    'decode_call': 'topθ_hw.sim.workload',
    'kernel_workload': 'topθ_hw.sim.workload',
    'prefill_call': 'topθ_hw.sim.workload',
}
__getattr__ = lazy_attributes(__name__, _LAZY)
