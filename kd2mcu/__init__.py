"""kd2mcu: distill a transformer into a tiny int8 LSTM and run it bit-exactly on a microcontroller."""
__version__ = "0.1.0"
