"""The integer model and everything that makes or reads it without C: the spec's arithmetic
(``qmath``), the integer model itself (``intmodel``, saved as ``model.json``), the Python integer
reference (``reference``), the float network and its calibration (``floatmodel``), ONNX import
(``onnx_import``), post-training quantization (``ptq``), quantization-aware training's exact forward
(``qat``, the one module here that needs torch) and random models for tests (``random_model``).

Imports only the package's common modules (``errors``, ``resources``, ``dataio``, ``outputs``).
"""
