"""TinyLSTM, the student: optional embedding, 1-2 LSTM layers (uni- or bidirectional), and a linear
head on the final hidden state of each direction of the last layer, exactly the shapes the integer
model can express (never ``output[:, -1]`` of a bidirectional LSTM).

Padded sequences are run with their true lengths (packed), so the final hidden state of a sample is
the one after its last real step and the backward direction starts at that step: the same as the
integer reference and the generated C. ``export_onnx`` writes the float student as a standard ONNX
graph with one ``LSTM`` node per layer, which ``kd2mcu build`` imports.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class TinyLSTM(nn.Module):
    def __init__(self, input_size: int, hidden: int, num_classes: int, layers: int = 1,
                 bidirectional: bool = False, vocab: int = 0, dropout: float = 0.0):
        """``input_size`` is the feature count, or the embedding width when ``vocab`` > 0 (token input).
        ``dropout``: while training, dropout on each layer's output sequence that feeds another layer and on
        the final state the head reads (no weights, nothing at inference: the integer model is the same)."""
        super().__init__()
        self.shape = dict(input_size=input_size, hidden=hidden, num_classes=num_classes, layers=layers,
                          bidirectional=bidirectional, vocab=vocab)
        if dropout:
            self.shape["dropout"] = dropout
        self.dropout = dropout
        self.embedding = nn.Embedding(vocab, input_size) if vocab else None
        dirs = 2 if bidirectional else 1
        # One module per layer, so every layer's output sequence is there for hidden-state alignment.
        self.lstms = nn.ModuleList(nn.LSTM(input_size if k == 0 else hidden * dirs, hidden, batch_first=True,
                                           bidirectional=bidirectional) for k in range(layers))
        self.head = nn.Linear(hidden * dirs, num_classes)

    @property
    def width(self) -> int:
        """Width of a layer's output and of the final state the head reads."""
        return self.shape["hidden"] * (2 if self.shape["bidirectional"] else 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        """x: [N, T, F] floats or [N, T] token ids; lengths: [N] true lengths.

        Returns (logits [N, C], final [N, width] = the head's input, outputs: one [N, T, width] per layer,
        zero past each sample's length).
        """
        T = x.shape[1]
        seq = self.embedding(x) if self.embedding is not None else x
        outputs = []
        h_n = None
        lengths_cpu = lengths.to("cpu", torch.int64)
        for k, lstm in enumerate(self.lstms):
            if k and self.dropout and self.training:  # (only when set: p = 0 keeps the random streams untouched)
                seq = nn.functional.dropout(seq, self.dropout, training=True)
            packed = pack_padded_sequence(seq, lengths_cpu, batch_first=True, enforce_sorted=False)
            out, (h_n, _) = lstm(packed)
            seq, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
            outputs.append(seq)
        final = torch.cat([h_n[0], h_n[1]], 1) if self.shape["bidirectional"] else h_n[0]
        if self.dropout and self.training:
            final = nn.functional.dropout(final, self.dropout, training=True)
        return self.head(final), final, outputs

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Adapter(nn.Module):
    """Linear + LayerNorm from the teacher's width to the student's, trained with the student."""

    def __init__(self, teacher_width: int, student_width: int):
        super().__init__()
        self.proj = nn.Linear(teacher_width, student_width)
        self.norm = nn.LayerNorm(student_width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(h))


class _Unpacked(nn.Module):
    """The student over whole sequences, written with plain LSTM calls for the ONNX exporter.

    On full-length input it equals TinyLSTM; padded samples are run by kd2mcu with their lengths.
    """

    def __init__(self, student: TinyLSTM):
        super().__init__()
        self.s = student

    def forward(self, x):
        seq = self.s.embedding(x) if self.s.embedding is not None else x
        h_n = None
        for lstm in self.s.lstms:
            seq, (h_n, _) = lstm(seq)
        final = torch.cat([h_n[0], h_n[1]], 1) if self.s.shape["bidirectional"] else h_n[0]
        return self.s.head(final)


def example_input(student: TinyLSTM, steps: int = 2) -> torch.Tensor:
    """A zero input of the student's kind (token ids or features), for tracing the export."""
    if student.embedding is not None:
        return torch.zeros((1, steps), dtype=torch.int64)
    return torch.zeros((1, steps, student.shape["input_size"]))


def export_onnx(student: TinyLSTM, example: torch.Tensor, path: Path) -> Path:
    """Write the float student as ONNX (input ``x`` with dynamic batch and time, output ``logits``)."""
    module = _Unpacked(student).eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), str(path), dynamo=False, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch", 1: "time"}, "logits": {0: "batch"}})
    return Path(path)


def save(student: TinyLSTM, path: Path) -> None:
    torch.save({"shape": student.shape, "state": student.state_dict()}, path)


def load(path: Path) -> TinyLSTM:
    """A student saved by ``save``; anything else is refused with a UserError."""
    from kd2mcu.errors import UserError

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        student = TinyLSTM(**ckpt["shape"])
        student.load_state_dict(ckpt["state"])
    except Exception as exc:  # unpickling, missing keys, another model's shape: all mean the same to the user
        raise UserError(f"{path}: not a kd2mcu student checkpoint (student.pt of a run): "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return student.eval()
