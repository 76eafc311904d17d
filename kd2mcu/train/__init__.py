"""Training: the data (``datasets``), the settings (``config``), the teachers (``teacher``,
``teacher_hf``), the TinyLSTM student (``student``), the training loop (``optim``), distillation and
quantization-aware distillation (``distill``), the run folder's plots (``plots``) and the run itself
(``run``, what ``kd2mcu train`` does). Uses torch; may import every stage below it.
"""
