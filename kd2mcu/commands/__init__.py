"""The thin per-command orchestration of ``kd2mcu build``, ``sim``, ``emulate``, ``flash``, ``report``
and ``export-onnx``: read the folders and files a command names, call the stages, write the result.
``kd2mcu train`` is ``kd2mcu.train.run``. Only ``kd2mcu.cli`` imports these.
"""
