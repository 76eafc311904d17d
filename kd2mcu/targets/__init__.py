"""Where the generated C runs: the gcc host simulator (``hostsim``), the STM32 firmware project and
its boards (``firmware``), QEMU (``qemu``), the programming probes (``probes``) and the footprint on
the target (``footprint``). Imports ``kd2mcu.codegen`` and ``kd2mcu.quant``, nothing of training.
"""
