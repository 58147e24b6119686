"""topθ_hw: capture, replay and cost Top-θ attention on real traces.

Data flows one way, one subpackage per stage:
trace (``store``, ``capture``) → engine statistics (``engine``) → workload and
simulation (``sim``) → tables and reports (``study``, ``report``).
"""

__version__ = "0.1.0"
