"""Teachers: what distillation learns from. Each kind yields the same ``TeacherOutputs``: logits for
every split and, for the training split, the hidden states used for alignment.

- ``transformer`` (default): a transformer encoder trained here on the task (a stem, learned
  positions, pre-norm encoder layers, masked mean pooling, linear head). The stem of sensor data is
  by default convolutional (``[teacher] stem = "conv"``): two 1-D convolutions (kernels 7 and 5,
  batch norm, GELU) over the raw samples, then one linear map of each frame's samples to a token; of
  text, a character embedding. Sensor teachers train on a new augmented view of the training split
  every epoch (``[teacher] augment``, ``kd2mcu.train.augment``). It sees the same time steps as the
  student, so alignment is per time step.
- ``pretrained``: a Hugging Face model folder, fine-tuned here (``kd2mcu.train.teacher_hf``); it has its
  own tokenizer, so alignment uses pooled states.
- ``onnx``: a classifier in an ONNX file run by onnxruntime (input ``x`` [N, T, F] or token ids,
  optional second input ``lengths``); its first output is the logits, any further outputs are
  hidden states ([N, T, D]: per step, or [N, D]: pooled) to align with.
- ``rocket``: MiniRocket features and a logistic regression (``kd2mcu.train.teacher_rocket``).
- several kinds joined by ``+`` (``transformer+rocket``): an ensemble; its logits are the mean of
  its members' log-probabilities, or weighted by their validation accuracy (``[teacher] combine``);
  it aligns with the first member that has hidden states and labels new inputs when every member can.
- ``logits``: precomputed logits from an .npz (``train`` [N, C] in the order of ``--data``'s
  samples, ``test`` [N, C] optional): soft labels from a model run elsewhere; no alignment.

Outputs are cached per dataset and teacher settings (``cache_key``), so the teacher is trained and
run once, not once per student.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from kd2mcu.errors import UserError
from kd2mcu.train.datasets import TaskData
from kd2mcu.train.optim import MIN_VAL_SAMPLES, run_stage

SPLITS = ("train", "val", "test")
# Early stopping needs a validation split that can tell epochs apart: on 5 or 8 samples (ArrowHead,
# PickupGestureWiimoteZ) it stopped the teacher after 25-50 epochs at 40-56% test accuracy, where 200
# epochs reach 71-72%.
MIN_VAL_FOR_PATIENCE = MIN_VAL_SAMPLES
TEACHER_CODE_VERSION = 4  # part of the cache key: raise it when the teacher's code changes its outputs


@dataclass
class TeacherOutputs:
    logits: dict                      # split -> float32 [N, C]
    hidden: list = field(default_factory=list)  # training split: per aligned layer [N, T, D] or [N, D]
    per_step: bool = True             # hidden states per time step (else pooled per sample)
    layers: list = field(default_factory=list)  # the teacher layers (1-based) the hidden states come from
    params: int = 0
    description: str = ""
    history: list = field(default_factory=list)  # training history (plots)
    label: Optional[Callable] = None  # (x, lengths) -> logits of new inputs (transfer set); None if it cannot
    # training split: the attention each step receives in the last layer, averaged over heads and queries
    # ([N, T], summing to 1 over a sample's steps; attention transfer), or None
    attention: Optional[np.ndarray] = None

    def accuracy(self, split: str, y: np.ndarray) -> Optional[float]:
        lg = self.logits.get(split)
        if lg is None or len(y) == 0:
            return None
        return float(np.mean(lg.argmax(1) == y))


class EncoderBlock(nn.Module):
    """A pre-norm transformer encoder layer, written out in plain ops so that it exports to ONNX as is."""

    def __init__(self, width: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.keep_attention, self.attention = False, None
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.ff1, self.ff2 = nn.Linear(width, ff), nn.Linear(ff, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, z: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """z [N, T, width]; pad [N, T], True at padded steps (they are never attended to)."""
        N, T, W = z.shape
        q, k, v = self.qkv(self.norm1(z)).reshape(N, T, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-1, -2)) * (W // self.heads) ** -0.5
        scores = scores.masked_fill(pad[:, None, None, :], -1e9)
        att = torch.softmax(scores, -1)
        self.attention = att.mean(1) if self.keep_attention else None  # [N, T queries, T keys]
        att = self.drop(att)
        z = z + self.drop(self.out((att @ v).transpose(1, 2).reshape(N, T, W)))
        return z + self.drop(self.ff2(self.drop(torch.nn.functional.gelu(self.ff1(self.norm2(z))))))


class ConvStem(nn.Module):
    """Sensor frames [N, T, k*F] (k samples of F features per step) -> tokens [N, T, width]: two 1-D
    convolutions over the N x (T*k) raw samples (same padding, batch norm, GELU), then a linear map of
    each step's k convolved samples to its token. Local shape features, which a linear patch embedding
    of 36 training series does not learn (ArrowHead: 41% -> 71% test accuracy)."""

    def __init__(self, features: int, frame_stack: int, width: int):
        super().__init__()
        self.k, self.F = frame_stack, features // frame_stack
        self.conv1, self.conv2 = nn.Conv1d(self.F, width, 7, padding=3), nn.Conv1d(width, width, 5, padding=2)
        self.norm1, self.norm2 = nn.BatchNorm1d(width), nn.BatchNorm1d(width)
        self.proj = nn.Linear(width * frame_stack, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, T, _ = x.shape
        r = x.reshape(N, T * self.k, self.F).transpose(1, 2)
        r = torch.nn.functional.gelu(self.norm1(self.conv1(r)))
        r = torch.nn.functional.gelu(self.norm2(self.conv2(r)))
        return self.proj(r.transpose(1, 2).reshape(N, T, -1))


class TransformerTeacher(nn.Module):
    def __init__(self, num_classes: int, max_len: int, width: int, depth: int, heads: int, ff: int,
                 dropout: float, features: int = 0, vocab: int = 0, stem: str = "linear", frame_stack: int = 1):
        super().__init__()
        self.shape = dict(num_classes=num_classes, max_len=max_len, width=width, depth=depth, heads=heads, ff=ff,
                          dropout=dropout, features=features, vocab=vocab, stem=stem, frame_stack=frame_stack)
        if vocab:
            self.embed = nn.Embedding(vocab, width, padding_idx=0)
        elif stem == "conv":
            self.embed = ConvStem(features, frame_stack, width)
        else:
            self.embed = nn.Linear(features, width)
        self.pos = nn.Parameter(torch.randn(max_len, width) * 0.02)
        self.layers = nn.ModuleList(EncoderBlock(width, heads, ff, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        """Returns (logits [N, C], hidden: the output of every layer, [N, T, width] each)."""
        T = x.shape[1]
        pad = torch.arange(T)[None, :] >= lengths[:, None]  # True where padded
        z = self.embed(x) + self.pos[:T]
        hidden = []
        for layer in self.layers:
            z = layer(z, pad)
            hidden.append(z)
        keep = (~pad).unsqueeze(-1).to(z.dtype)
        pooled = (self.norm(z) * keep).sum(1) / keep.sum(1)
        return self.head(pooled), hidden


class _WithHidden(nn.Module):
    """The teacher as exported: inputs x and lengths, outputs the logits then the aligned layers' states."""

    def __init__(self, teacher: TransformerTeacher, layers: list[int]):
        super().__init__()
        self.teacher, self.layers = teacher, layers

    def forward(self, x, lengths):
        logits, hidden = self.teacher(x, lengths)
        return (logits, *[hidden[k - 1] for k in self.layers])


def load_transformer(path: Path) -> TransformerTeacher:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = TransformerTeacher(**ckpt["shape"])
    model.load_state_dict(ckpt["state"])
    return model.eval()


def export_onnx(teacher: TransformerTeacher, example_x: np.ndarray, layers: list[int], path: Path) -> Path:
    """The transformer teacher as ONNX, in the form ``--teacher onnx`` reads: inputs ``x`` [N, T, ...] and
    ``lengths`` [N]; outputs ``logits`` [N, C], then ``hidden_K`` [N, T, width] for each aligned layer K."""
    import contextlib
    import io
    import warnings

    module = _WithHidden(teacher, layers).eval()
    x = torch.from_numpy(example_x)
    lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.int64)
    names = ["logits"] + [f"hidden_{k}" for k in layers]
    axes = {"x": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "logits": {0: "batch"}}
    axes.update({n: {0: "batch", 1: "time"} for n in names[1:]})
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x, lengths), str(path), dynamo=False, input_names=["x", "lengths"],
                          output_names=names, dynamic_axes=axes)
    return Path(path)


def default_align_layers(depth: int) -> list[int]:
    """A middle layer and the last (1-based), as the distillation default."""
    return sorted({max(1, (depth + 1) // 2), depth})


def received_attention(att: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[N, T, T] attention maps (rows: queries) -> [N, T]: the attention each step receives, averaged over
    the sample's valid queries; zero at padded steps, summing to 1 over the valid ones."""
    T = att.shape[1]
    valid = (torch.arange(T)[None, :] < lengths[:, None]).to(att.dtype)
    return (att * valid[:, :, None]).sum(1) / valid.sum(1, keepdim=True)


def _predict(model: TransformerTeacher, x: np.ndarray, lengths: np.ndarray, layers: list[int],
             batch: int = 256, attention: bool = False):
    """(logits, the aligned layers' hidden states, the last layer's received attention [N, T] or None)."""
    logits, hidden, received = [], [[] for _ in layers], []
    model.eval()
    last = model.layers[-1]
    last.keep_attention = attention
    try:
        with torch.no_grad():
            for s in range(0, len(x), batch):
                lb = torch.from_numpy(lengths[s:s + batch])
                lg, hs = model(torch.from_numpy(x[s:s + batch]), lb)
                logits.append(lg.numpy())
                for k, layer in enumerate(layers):
                    hidden[k].append(hs[layer - 1].numpy().astype(np.float16))
                if attention:
                    received.append(received_attention(last.attention, lb).numpy().astype(np.float32))
    finally:
        last.keep_attention, last.attention = False, None
    C = model.shape["num_classes"]
    return (np.concatenate(logits) if logits else np.zeros((0, C), np.float32),
            [np.concatenate(h) for h in hidden] if len(x) else [],
            np.concatenate(received) if received else None)


def train_transformer(task: TaskData, tcfg: dict, align_layers: list[int], quiet: bool = False):
    """Fit the default teacher on the task; returns (the model, TeacherOutputs)."""
    torch.manual_seed(tcfg["seed"])
    sensor = task.kind == "sequence"
    model = TransformerTeacher(task.num_classes, task.max_len, tcfg["width"], tcfg["depth"], tcfg["heads"],
                               tcfg["ff"], tcfg["dropout"], features=task.num_features or 0,
                               vocab=len(task.vocab) if task.vocab else 0, stem=tcfg["stem"] if sensor else "linear",
                               frame_stack=task.frame_stack)
    xt, lt, yt = torch.from_numpy(task.x_train), torch.from_numpy(task.len_train), torch.from_numpy(task.y_train)
    loss_fn = nn.CrossEntropyLoss()
    view = {"epoch": None, "x": xt, "lengths": lt}

    def step_loss(idx, epoch):
        if sensor and tcfg["augment"] and view["epoch"] != epoch:  # one new view of every series per epoch
            from kd2mcu.train.augment import views

            xa, la = views(task.x_train, task.len_train, task.frame_stack, 1, tcfg["seed"] * 100_003 + epoch)
            view.update(epoch=epoch, x=torch.from_numpy(xa), lengths=torch.from_numpy(la))
        logits, _ = model(view["x"][idx], view["lengths"][idx])
        return loss_fn(logits, yt[idx])

    def val_accuracy():
        if len(task.y_val) == 0:
            return None
        lg = _predict(model, task.x_val, task.len_val, [])[0]
        return float(np.mean(lg.argmax(1) == task.y_val))

    history = run_stage("teacher", [model], step_loss, len(task.y_train), epochs=tcfg["epochs"], lr=tcfg["lr"],
                        weight_decay=1e-2, batch_size=tcfg["batch_size"], grad_clip=1.0, seed=tcfg["seed"],
                        evaluate=val_accuracy, quiet=quiet,
                        patience=tcfg["patience"] if len(task.y_val) >= MIN_VAL_FOR_PATIENCE else 0)
    out = TeacherOutputs(logits={}, per_step=True, layers=align_layers,
                         params=sum(p.numel() for p in model.parameters()),
                         description=f"transformer encoder, {tcfg['depth']} layers, width {tcfg['width']}, "
                                     f"{tcfg['heads']} heads, trained here", history=[history])
    for split in SPLITS:
        x, lengths = getattr(task, f"x_{split}"), getattr(task, f"len_{split}")
        lg, hidden, attention = _predict(model, x, lengths, align_layers if split == "train" else [],
                                         attention=split == "train")
        out.logits[split] = lg
        if split == "train":
            out.hidden, out.attention = hidden, attention
    out.label = labeller(model)
    return model, out


def combine(parts: list[TeacherOutputs], y_val: np.ndarray, how: str, weights=()) -> TeacherOutputs:
    """One teacher from several: logits = sum_i w_i * log_softmax(logits_i), the weights w_i given
    (``weights``, one per member, scaled to sum 1), else equal (``how = "mean"``) or proportional to each
    member's validation accuracy (``"val_accuracy"``, equal when there is no validation split)."""
    if len(weights):
        if len(weights) != len(parts):
            raise UserError(f"[teacher] weights has {len(weights)} values for an ensemble of {len(parts)} teachers: "
                            "give one per member, in the order of [teacher] kind")
        w = np.asarray(weights, np.float64) / float(np.sum(weights))
    elif how == "val_accuracy" and len(y_val):
        acc = np.array([max(p.accuracy("val", y_val) or 0.0, 1e-3) for p in parts])
        w = acc / acc.sum()
    else:
        w = np.full(len(parts), 1.0 / len(parts))

    def mix(logit_list):
        return sum(wi * torch.log_softmax(torch.from_numpy(np.asarray(lg, np.float32)), 1).numpy()
                   for wi, lg in zip(w, logit_list)).astype(np.float32)

    splits = [k for k in SPLITS if all(k in p.logits for p in parts)]
    aligned = next((p for p in parts if p.hidden), parts[0])
    labels = [p.label for p in parts]
    label = (lambda x, lengths: mix([f(x, lengths) for f in labels])) if all(labels) else None
    return TeacherOutputs(logits={k: mix([p.logits[k] for p in parts]) for k in splits}, hidden=aligned.hidden,
                          per_step=aligned.per_step, layers=aligned.layers, params=sum(p.params for p in parts),
                          description=" + ".join(p.description for p in parts) +
                          f" (ensemble, weights {', '.join(f'{v:.2f}' for v in w)})",
                          history=[h for p in parts for h in p.history], label=label,
                          attention=next((p.attention for p in parts if p.attention is not None), None))


def labeller(model: TransformerTeacher) -> Callable:
    """The teacher's logits on new inputs (the distillation transfer set)."""
    return lambda x, lengths: _predict(model, x, lengths, [])[0]


def run_onnx(task: TaskData, path: str) -> TeacherOutputs:
    """A teacher in an ONNX file: logits (first output) and hidden states (any further outputs)."""
    import onnxruntime as ort

    p = Path(path)
    if not p.is_file():
        raise UserError(f"[teacher] path {path}: no such ONNX file")
    try:
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UserError(f"[teacher] path {path}: onnxruntime cannot load it ({str(exc).splitlines()[0]})") from None
    inputs = [i.name for i in sess.get_inputs()]
    if len(inputs) not in (1, 2):
        raise UserError(f"{path}: the teacher must take x (and optionally lengths), it takes {inputs}")
    out = TeacherOutputs(logits={}, description=f"ONNX model {p.name} (onnxruntime)")
    for split in SPLITS:
        x, lengths = getattr(task, f"x_{split}"), getattr(task, f"len_{split}")
        if len(x) == 0:
            out.logits[split] = np.zeros((0, task.num_classes), np.float32)
            continue
        feeds = {inputs[0]: x}
        if len(inputs) == 2:
            feeds[inputs[1]] = lengths.astype(np.int64)
        try:
            res = sess.run(None, feeds)
        except Exception as exc:
            raise UserError(f"{path}: onnxruntime failed on the {split} split ({str(exc).splitlines()[0]}); the "
                            f"teacher must accept x of shape {list(x.shape)} ({x.dtype})") from None
        logits = np.asarray(res[0], np.float32)
        if logits.shape != (len(x), task.num_classes):
            raise UserError(f"{path}: the first output has shape {list(logits.shape)}, expected logits "
                            f"[{len(x)}, {task.num_classes}]")
        out.logits[split] = logits
        if split == "train":
            out.hidden = [np.asarray(h, np.float16) for h in res[1:]]
    out.per_step = all(h.ndim == 3 for h in out.hidden)
    if not out.per_step:
        out.hidden = [h if h.ndim == 2 else h.astype(np.float32).mean(1).astype(np.float16) for h in out.hidden]
    names = [o.name for o in sess.get_outputs()[1:]]
    numbered = [n[len("hidden_"):] for n in names if n.startswith("hidden_") and n[len("hidden_"):].isdigit()]
    out.layers = [int(k) for k in numbered] if len(numbered) == len(names) else list(range(1, len(names) + 1))
    return out


def read_logits(task: TaskData, path: str, test_in_train_file: bool, train_file: str = "") -> TeacherOutputs:
    """Precomputed teacher logits: a ``kd2mcu label`` folder (the --data file labelled, optionally with pooled
    hidden states), or an .npz with ``train`` [N, C] (the --data file's order) and optional ``test`` (the --test
    file's order). Without a --test file the test split is part of --data, and of ``train``."""
    from kd2mcu.train import label_store

    p = Path(path)
    if label_store.is_label_folder(p):
        return _labels_folder(task, p, test_in_train_file, train_file)
    if not p.is_file():
        raise UserError(f"[teacher] path {path}: no such logits file or kd2mcu label folder")
    try:
        f = np.load(p, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError("a single array, not an .npz archive")
        with f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"[teacher] path {path}: not a readable .npz of logits ({exc}); save with "
                        "np.savez(path, train=..., test=...)") from None
    if "train" not in arrays:
        raise UserError(f"{path}: no array 'train'; save the teacher's logits on the --data samples with "
                        "np.savez(path, train=..., test=...)")
    full = arrays["train"]
    n_file = len(task.index_train) + len(task.index_val) + (len(task.index_test) if test_in_train_file else 0)
    if full.ndim != 2 or full.shape != (n_file, task.num_classes):
        raise UserError(f"{path}: train logits have shape {list(full.shape)}, expected [{n_file}, {task.num_classes}] "
                        "(one row per training sample, in file order)")
    if not np.isfinite(full).all():
        raise UserError(f"{path}: the logits hold NaN or Inf")
    out = TeacherOutputs(logits={"train": full[task.index_train].astype(np.float32),
                                 "val": full[task.index_val].astype(np.float32)},
                         per_step=False, description=f"precomputed logits from {p.name}")
    if test_in_train_file:
        out.logits["test"] = full[task.index_test].astype(np.float32)
    elif "test" in arrays:
        if arrays["test"].shape != (len(task.y_test), task.num_classes):
            raise UserError(f"{path}: test logits have shape {list(arrays['test'].shape)}, expected "
                            f"[{len(task.y_test)}, {task.num_classes}]")
        out.logits["test"] = arrays["test"].astype(np.float32)
    return out


def _labels_folder(task: TaskData, p: Path, test_in_train_file: bool, train_file: str) -> TeacherOutputs:
    """The logits (and pooled hidden states) ``kd2mcu label`` wrote for the --data file ``train_file``."""
    from kd2mcu.train import label_store

    full, hidden, manifest = label_store.read_labels(p)
    labelled = manifest.get("identity", {}).get("data_sha256")
    if train_file and Path(train_file).is_file() and \
            hashlib.sha256(Path(train_file).read_bytes()).hexdigest() != labelled:
        raise UserError(f"[teacher] path {p}: these labels are of another file "
                        f"({manifest.get('data', {}).get('path', 'unknown')}), not of --data {train_file}; run kd2mcu "
                        f"label --data {train_file}")
    n_file = len(task.index_train) + len(task.index_val) + (len(task.index_test) if test_in_train_file else 0)
    if full.shape != (n_file, task.num_classes):
        raise UserError(f"[teacher] path {p}: the labels have {full.shape[0]} rows of {full.shape[1]} classes, the "
                        f"--data file {n_file} samples of {task.num_classes}; label the --data file itself")
    classes, own = [str(c) for c in manifest.get("classes", [])], [str(c) for c in task.classes]
    named = classes != [str(k) for k in range(len(classes))] and own != [str(k) for k in range(len(own))]
    if named and classes != own:  # both sides name their classes: the names must agree, in order
        raise UserError(f"[teacher] path {p}: the teacher's classes are {', '.join(classes)}, the data's "
                        f"{', '.join(str(c) for c in task.classes)}; label with a teacher of these classes")
    teacher = manifest.get("teacher", {})
    out = TeacherOutputs(logits={"train": full[task.index_train], "val": full[task.index_val]}, per_step=False,
                         layers=list(hidden), hidden=[h[task.index_train] for h in hidden.values()],
                         description=f"labels from kd2mcu label ({teacher.get('description', 'a teacher')}, "
                                     f"{p.name})")
    if test_in_train_file:
        out.logits["test"] = full[task.index_test]
    return out


def cache_key(task: TaskData, tcfg: dict, align_layers: list[int]) -> str:
    """A digest of everything the teacher's outputs depend on: data, teacher settings, aligned layers."""
    h = hashlib.sha256()
    for split in SPLITS:
        for a in (getattr(task, f"x_{split}"), getattr(task, f"len_{split}"), getattr(task, f"y_{split}")):
            h.update(np.ascontiguousarray(a).tobytes())
    settings = dict(tcfg)
    settings.pop("finetune_epochs" if settings.get("kind") != "pretrained" else "epochs", None)  # only what it reads
    settings.pop("weights", None)  # how an ensemble mixes its members: not a member's outputs
    if settings.get("path"):
        settings["path_sha256"] = hashlib.sha256(Path(settings["path"]).read_bytes()).hexdigest() \
            if Path(settings["path"]).is_file() else settings["path"]
    h.update(json.dumps({"teacher": settings, "align": align_layers, "torch": torch.__version__,
                         "code": TEACHER_CODE_VERSION},
                        sort_keys=True).encode())
    return h.hexdigest()[:24]


def save_outputs(out: TeacherOutputs, path: Path) -> None:
    arrays = {f"logits_{k}": v for k, v in out.logits.items()}
    arrays.update({f"hidden_{k}": h for k, h in enumerate(out.hidden)})
    if out.attention is not None:
        arrays["attention"] = out.attention
    meta = {"per_step": out.per_step, "layers": out.layers, "params": out.params, "description": out.description,
            "history": out.history}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)


def load_outputs(path: Path) -> TeacherOutputs:
    with np.load(path, allow_pickle=False) as f:
        meta = json.loads(str(f["meta"]))
        logits = {k[len("logits_"):]: f[k] for k in f.files if k.startswith("logits_")}
        hidden = [f[f"hidden_{k}"] for k in range(sum(1 for n in f.files if n.startswith("hidden_")))]
        attention = f["attention"] if "attention" in f.files else None
    return TeacherOutputs(logits=logits, hidden=hidden, attention=attention, **meta)
