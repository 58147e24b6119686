"""Simulator stage: devices as data, workloads from real masks, a SimPy model of attention kernels.

``load_device`` is the only door to device numbers; ``kernel_workload`` / ``workload_from_stats``
turn shapes or engine statistics into kernel passes; ``simulate_call`` / ``simulate_kernel`` /
``simulate_stats`` time them. Accelerators (a device with a ``[dma]`` section) run the DMA-block
model of ``dma.py``; ``dma_kernel_for(device, block_keys=, buffers=)`` configures their kernel.
"""

from topθ_hw.sim.dma_kernel import DmaKernel, dma_kernel_for
from topθ_hw.sim.hardware import Device, known_devices, load_device
from topθ_hw.sim.simulate import simulate_call, simulate_kernel
from topθ_hw.sim.stats import simulate_stats, workload_from_stats
from topθ_hw.sim.workload import decode_call, kernel_workload, prefill_call

__all__ = ["Device", "DmaKernel", "dma_kernel_for", "known_devices", "load_device", "simulate_call", "simulate_kernel", "simulate_stats",
           "workload_from_stats", "decode_call", "kernel_workload", "prefill_call"]
