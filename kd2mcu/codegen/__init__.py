"""The integer model rendered as C through the Jinja templates (``render``), and the build folder
that holds it (``buildfolder``). Imports the integer model (``kd2mcu.quant``), nothing of training.
"""
