"""The training configuration: every setting of ``kd2mcu train``, with documented defaults.

A run reads an optional TOML file (``--config kd2mcu.toml``) whose sections and keys are those of
``DEFAULTS`` below; command-line flags override the file, and the file overrides the defaults. An
unknown section or key is refused by name, with the valid ones listed. The resolved configuration
is written to the run folder as ``config.toml``, so a run can be repeated exactly.
"""
from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

from kd2mcu.errors import UserError
from kd2mcu.quant.intmodel import MAX_STEPS
from kd2mcu.train.augment import AUGMENTS
from kd2mcu.train.datasets import AUTO_STACK_STEPS

MAX_VOCAB = 65_535
MAX_EPOCHS = 100_000
TEACHER_KINDS = ("auto", "transformer", "pretrained", "onnx", "logits", "rocket", "tfidf")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# section -> key -> (default, help). The types of the defaults are the types a value must have.
DEFAULTS: dict[str, dict[str, tuple]] = {
    "run": {
        "seed": (0, "seed of the student, the adapter, the data split and the baseline"),
        "baseline": (False, "also train the same student without the teacher (metrics: baseline_accuracy)"),
        "threads": (1, "torch CPU threads (small models train fastest on one)"),
        "stage_samples": (60000, "training samples a stage sees at most (epochs x training split, the transfer set "
                                 "not counted): on a large split every stage runs fewer epochs, at least 1 (0: no limit)"),
    },
    "data": {
        "dataset": ("basic_motions", "bundled dataset: basic_motions, japanese_vowels, arrow_head, osuleaf, pickup_gesture or "
                               "chinese_reviews"),
        "train_file": ("", "your own training data (.npz or .csv) instead of a bundled set"),
        "test_file": ("", "your own test data (.npz or .csv); without it 20% of train_file is held out"),
        "val_fraction": (0.15, "share of the training split held out for choosing the best epoch"),
        "folds": (0, "cross-validation: the training split dealt into this many stratified folds (drawn with the "
                     "seed), fold number `fold` held out as the validation split instead of val_fraction (0: off)"),
        "fold": (0, "cross-validation: the fold held out (0..folds-1); run each to hold out every sample once"),
        "fold_split": ("validation", "cross-validation: the held-out fold is the validation split (validation), or the "
                                     "test split (test: nested, the fold only scored, never used to choose an epoch "
                                     "or the fallback; validation is val_fraction of the other folds, the dataset's "
                                     "own test split is not loaded)"),
        "max_len": (0, "steps kept per sample, longer ones are cut (0: text 64 characters, sensor data its longest sequence)"),
        "max_vocab": (2000, "text: vocabulary size cap, <pad> and <oov> included"),
        "subset": (0, "use only this many samples of a bundled set (0: all)"),
        "unlabeled": ("", "a kd2mcu label folder: its corpus's rows, with the teacher's logits, join stage 2 "
                          "(soft targets; hard label: the teacher's class; not with beta > 0)"),
        "frame_stack": (0, "sensor data: consecutive samples stacked into one LSTM step (k samples of F features = "
                           "k*F inputs); 0: auto, 1 for sequences up to 128 steps, else enough to run at most "
                           "stack_steps steps"),
        "stack_steps": (AUTO_STACK_STEPS, "sensor data, frame_stack = 0 (auto): a sequence longer than 128 steps is stacked to run at "
                            "most this many LSTM steps (8..128)"),
    },
    "teacher": {
        "kind": ("auto", "auto (sensor data: transformer+rocket, text: transformer+tfidf), transformer (trained here), pretrained (Hugging Face folder, fine-tuned), "
                                "onnx (a file run by onnxruntime), logits (precomputed, from a file) or rocket (MiniRocket + "
                                "logistic regression, fitted here: for small sensor sets), tfidf (text: character 1-2-gram "
                                "TF-IDF + logistic regression, fitted here); several joined by + "
                                "(transformer+rocket) are one ensemble teacher"),
        "weights": ([], "ensemble teacher: one weight per member, in the order of kind (auto: transformer, then "
                        "rocket or tfidf), for the weighted mean of their log-probabilities (empty: by combine; with kind "
                        "= auto on sensor data and combine = mean, [1.0, 2.0]: the rocket teacher weighs twice, chosen "
                        "by nested 5-fold cross-validation of three univariate sets' training splits, 249 of 286 "
                        "held-out samples against 246 with equal weights)"),
        "combine": ("mean", "ensemble teacher: mean (of the members' log-probabilities) or val_accuracy (weighted "
                            "by each member's validation accuracy)"),
        "path": ("", "pretrained: the model folder (empty: all-MiniLM-L6-v2 from kd2mcu[minilm]); onnx: the .onnx file; "
                     "logits: the .npz file"),
        "seed": (0, "seed of the teacher's training (its outputs are cached per dataset and teacher settings)"),
        "stem": ("conv", "transformer, sensor data: conv (two 1-D convolutions over the raw samples, then one "
                         "token per step) or linear (a linear map of each step's features)"),
        "augment": (True, "transformer, sensor data: train on a new augmented view of the training split every epoch "
                          "(scaling, jitter, window slicing)"),
        "width": (64, "transformer: model width"),
        "depth": (3, "transformer: encoder layers"),
        "heads": (4, "transformer: attention heads"),
        "ff": (128, "transformer: feed-forward width"),
        "dropout": (0.1, "transformer: dropout"),
        "epochs": (200, "training epochs of the transformer"),
        "finetune_epochs": (3, "pretrained teacher: fine-tuning epochs (its encoder already knows the language)"),
        "patience": (30, "transformer: stop once this many epochs in a row bring no better validation accuracy (0: "
                         "never; only with 50 or more validation samples, fewer cannot tell epochs apart)"),
        "lr": (1e-3, "learning rate (AdamW, cosine schedule)"),
        "batch_size": (32, "batch size"),
    },
    "student": {
        "hidden": (32, "LSTM hidden units per direction (8..128)"),
        "layers": (1, "LSTM layers (1 or 2)"),
        "bidirectional": (False, "bidirectional LSTM layers"),
        "embedding": (32, "text: embedding width (sensor data has no embedding)"),
        "dropout": (0.0, "while training: dropout on the final hidden state the head reads and between layers "
                         "(nothing changes at inference; 0: off)"),
    },
    "distill": {
        "warmup_epochs": (10, "stage 1: hard labels only"),
        "transfer": (160, "augmented views of the training split per sample, labelled by the teacher and added to "
                         "stage 2 (sensor data; teachers that can label new inputs; not with beta > 0); 160 (with "
                         "batch size 32) chosen by nested 5-fold cross-validation of three univariate sets' training "
                         "splits (246 of 286 held-out samples against 244 with 80, 234 with 40 and 227 with 20, batch "
                         "size 8); at most transfer_max views in all"),
        "transfer_max": (24000, "sensor data: the transfer set holds at most this many views; on a larger training "
                                "split each sample gets fewer, transfer_max // samples (at least 1; 0: no limit). "
                                "Keeps stage 2's time in bounds (JapaneseVowels: 104 views per sample)"),
        "text_transfer": (0, "text: views of each training text (a random 70-100% window, 10% of its characters "
                             "dropped; transfer_splice applies too; kd2mcu/train/augment_text.py), labelled by the "
                             "teacher and added to stage 2, as transfer does for sensor data (teachers that can "
                             "label new inputs; not with beta > 0)"),
        "transfer_augment": (["scale", "jitter", "slice"], "how the transfer set's views are made (kd2mcu/train/augment.py): "
                             "scale (magnitude), jitter (noise), slice (a random 85-100% window, stretched), warp "
                             "(a smooth time warp), roll (a circular shift: for cyclic series such as outlines traced "
                             "from any start or rotations; on ArrowHead it cost 11 points)"),
        "transfer_rounds": (1, "how many times stage 2 draws its transfer set anew, each draw labelled by the teacher "
                                "and used for an equal part of the epochs (fresh views, so no one view is learned "
                                "by heart; each draw costs the teacher's labelling once more); 1: one draw"),
        "transfer_mixup": (0.5, "share of the transfer set's views that are mixtures of two (mixup: inputs between "
                                "the samples, labelled by the teacher); 0.5 chosen by 5-fold cross-validation of four "
                                "sensor sets' training splits (284 of 326 held-out samples against 275 with 0)"),
        "transfer_splice": (0.5, "share of the transfer set's views in which one segment (10-50% of the length) is "
                                 "replaced by the same steps of another view (CutMix in time), labelled by the "
                                 "teacher; 0.5 chosen by 5-fold cross-validation of three univariate sets' training "
                                 "splits (255 of 286 held-out samples against 244 with 0); 0: none"),
        "select": ("auto", "stage 2 keeps the epoch with the best validation accuracy (accuracy), or the lowest "
                           "validation distillation loss (loss), far less noisy on a small validation split, or the last "
                           "epoch (last, the end of the cosine schedule), or the mean of the weights of the epochs "
                           "from average_from on (average: stochastic weight averaging); auto: loss below 50 "
                           "validation samples, else accuracy"),
        "average_from": (0.5, "select = average: the share of stage 2 after which each epoch's weights join the mean"),
        "fallback": (True, "also train the student without the teacher and ship that one (QAT on hard labels) when "
                           "it beats the distilled student on the validation split by more than chance (a sign test)"),
        "epochs": (100, "stage 2: full distillation"),
        "temperature": (2.0, "softmax temperature T of the soft targets"),
        "temperature_schedule": ([], "temperatures for equal parts of stage 2, e.g. [5.0, 3.0, 1.0] (overrides temperature)"),
        "alpha": (0.7, "weight of the soft-target term T^2 * KL; (1 - alpha) weighs the hard-label cross entropy"),
        "beta": (0.0, "weight of the hidden-state alignment MSE(adapter(teacher_hidden), student_hidden); "
                      "0 by default: it did not help on the bundled sets (benchmarks/ablation_kd.py)"),
        "gamma": (0.0, "weight of attention transfer: the attention each step receives in a transformer teacher's "
                       "last layer against a learned 1x1 projection of the student's outputs (MSE); 0: off"),
        "align_layers": ([], "teacher layers to align with (1-based; empty: a middle one and the last)"),
        "lr": (5e-3, "learning rate (AdamW, cosine schedule per stage)"),
        "weight_decay": (1e-2, "AdamW weight decay"),
        "batch_size": (0, "batch size (0: auto: 32 where stage 2 adds sensor views, chosen with transfer = 160 by "
                          "nested cross-validation; else 8, as for the student trained without the teacher; 64 "
                          "on a training split above 2000 samples)"),
        "grad_clip": (1.0, "gradient norm clipping"),
    },
    "prune": {
        "sparsity": (0.0, "share of blocks (4 inputs x 4 gates of one hidden unit) pruned to zero in every LSTM weight "
                          "matrix; the generated C stores and computes only the others (0: dense)"),
        "start": (0.1, "fraction of stage 2 at which gradual magnitude pruning starts"),
        "end": (0.6, "fraction of stage 2 at which the target sparsity is reached (a cubic ramp); QAT keeps the mask"),
    },
    "qat": {
        "enabled": (True, "stage 3: keep distilling while the forward pass imitates the int8 kernel exactly"),
        "epochs": (10, "stage 3 epochs (the distilled student competes too: the epoch best on validation is kept)"),
        "lr": (2e-4, "stage 3 learning rate (AdamW, cosine; batch size, alpha and clipping as in [distill])"),
    },
}


def defaults() -> dict:
    return {sec: {k: copy.deepcopy(v[0]) for k, v in keys.items()} for sec, keys in DEFAULTS.items()}


def _valid_keys(section: str) -> str:
    return ", ".join(DEFAULTS[section])


def _check_value(section: str, key: str, value, source: str):
    want = DEFAULTS[section][key][0]
    where = f"{source}: [{section}] {key}"
    if isinstance(want, bool):
        if not isinstance(value, bool):
            raise UserError(f"{where} = {value!r}: expected true or false")
        return value
    if isinstance(want, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where} = {value!r}: expected an integer")
        return value
    if isinstance(want, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{where} = {value!r}: expected a number")
        return float(value)
    if isinstance(want, str):
        if not isinstance(value, str):
            raise UserError(f"{where} = {value!r}: expected a string")
        return value
    if isinstance(want, list) and want and isinstance(want[0], str):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{where} = {value!r}: expected a list of strings")
        return list(value)
    if isinstance(want, list):
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise UserError(f"{where} = {value!r}: expected a list of numbers")
        return list(value)
    raise AssertionError(want)  # pragma: no cover


def merge(cfg: dict, overrides: dict, source: str) -> dict:
    """``cfg`` updated with ``overrides`` ({section: {key: value}}), every name and type checked."""
    out = copy.deepcopy(cfg)
    for section, keys in overrides.items():
        if section not in DEFAULTS:
            raise UserError(f"{source}: unknown section [{section}]; valid sections: {', '.join(DEFAULTS)}")
        if not isinstance(keys, dict):
            raise UserError(f"{source}: {section} must be a [{section}] table of settings")
        for key, value in keys.items():
            if key not in DEFAULTS[section]:
                raise UserError(f"{source}: unknown key '{key}' in [{section}]; valid keys: {_valid_keys(section)}")
            out[section][key] = _check_value(section, key, value, source)
    return out


def load(path) -> dict:
    """Defaults updated with the TOML file at ``path`` (None: defaults only)."""
    cfg = defaults()
    if path is None:
        return validate(cfg, "defaults")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"--config {path}: not valid TOML ({exc})") from None
    return merge(cfg, data, f"--config {path}")


def validate(cfg: dict, source: str) -> dict:
    """Ranges the student and the integer model can express, and sane training settings."""
    s, d, t, data = cfg["student"], cfg["distill"], cfg["teacher"], cfg["data"]
    rules = [
        (8 <= s["hidden"] <= 128, "[student] hidden must lie in 8..128"),
        (s["layers"] in (1, 2), "[student] layers must be 1 or 2"),
        (1 <= s["embedding"] <= 256, "[student] embedding must lie in 1..256"),
        (0.0 <= s["dropout"] < 1.0, "[student] dropout must lie in 0..1 (1 excluded)"),
        (0.0 <= d["alpha"] <= 1.0, "[distill] alpha must lie in 0..1"),
        (d["beta"] >= 0.0, "[distill] beta must be >= 0"),
        (0.0 <= d["gamma"] <= 1000.0, "[distill] gamma must lie in 0..1000"),
        (d["temperature"] > 0 and all(v > 0 for v in d["temperature_schedule"]),
         "[distill] temperatures must be > 0"),
        (d["warmup_epochs"] >= 0 and d["epochs"] >= 0 and d["warmup_epochs"] + d["epochs"] > 0,
         "[distill] warmup_epochs and epochs must be >= 0, and not both 0"),
        (d["lr"] > 0 and t["lr"] > 0, "learning rates must be > 0"),
        (d["batch_size"] >= 0 and t["batch_size"] >= 1, "batch sizes must be >= 1 ([distill] 0: auto)"),
        (0 <= cfg["run"]["stage_samples"] <= 10**9, "[run] stage_samples must lie in 0..1000000000"),
        (d["grad_clip"] > 0, "[distill] grad_clip must be > 0"),
        (t["kind"] and all(k in TEACHER_KINDS for k in t["kind"].split("+")),
         "[teacher] kind must be auto, transformer, pretrained, onnx, logits, rocket or tfidf, or several joined by +"),
        (len(set(t["kind"].split("+"))) == len(t["kind"].split("+")), "[teacher] kind names a teacher twice"),
        (t["kind"] == "auto" or "auto" not in t["kind"].split("+"), "[teacher] kind: auto stands alone"),
        (sum(k in ("pretrained", "onnx", "logits") for k in t["kind"].split("+")) <= 1,
         "[teacher] kind: at most one of pretrained, onnx and logits (they share [teacher] path)"),
        (t["combine"] in ("mean", "val_accuracy"), "[teacher] combine must be mean or val_accuracy"),
        (all(v >= 0 for v in t["weights"]) and (not t["weights"] or sum(t["weights"]) > 0),
         "[teacher] weights must be >= 0, not all 0"),
        (not t["weights"] or len(t["weights"]) == (2 if t["kind"] == "auto" else len(t["kind"].split("+"))),
         f"[teacher] weights has {len(t['weights'])} values: give one per member of [teacher] kind = {t['kind']} "
         "(auto: 2, the transformer and rocket or tfidf)"),
        (t["stem"] in ("conv", "linear"), "[teacher] stem must be conv or linear"),
        (t["width"] % max(t["heads"], 1) == 0 and t["heads"] >= 1 and t["depth"] >= 1,
         "[teacher] width must be a multiple of heads, depth >= 1"),
        (t["epochs"] >= 0, "[teacher] epochs must be >= 0"),
        (0 <= t["patience"] <= MAX_EPOCHS, "[teacher] patience must be >= 0"),
        (0.0 <= t["dropout"] < 1.0, "[teacher] dropout must lie in 0..1"),
        (0.0 <= data["val_fraction"] < 0.9, "[data] val_fraction must lie in 0..0.9"),
        (data["folds"] == 0 or 2 <= data["folds"] <= 1000, "[data] folds must be 0 (off) or lie in 2..1000"),
        (0 <= data["fold"] < max(data["folds"], 1), "[data] fold must lie in 0..folds-1 (0 without folds)"),
        (data["fold_split"] in ("validation", "test"), "[data] fold_split must be validation or test"),
        (data["fold_split"] == "validation" or data["folds"] >= 2,
         "[data] fold_split = test needs cross-validation: give [data] folds (2 or more) and fold"),
        (0 <= data["max_len"] <= MAX_STEPS, f"[data] max_len must lie in 0..{MAX_STEPS}"),
        (3 <= data["max_vocab"] <= MAX_VOCAB, f"[data] max_vocab must lie in 3..{MAX_VOCAB}"),
        (0 <= data["subset"] <= 10**7, "[data] subset must lie in 0..10000000"),
        (0 <= data["frame_stack"] <= 64, "[data] frame_stack must lie in 0..64 (0: auto)"),
        (8 <= data["stack_steps"] <= 128, "[data] stack_steps must lie in 8..128"),
        (0 <= d["transfer"] <= 1000, "[distill] transfer must lie in 0..1000"),
        (0 <= d["transfer_max"] <= 10**7, "[distill] transfer_max must lie in 0..10000000 (0: no limit)"),
        (0 <= d["text_transfer"] <= 100, "[distill] text_transfer must lie in 0..100"),
        (0.0 <= d["transfer_mixup"] <= 1.0, "[distill] transfer_mixup must lie in 0..1"),
        (0.0 <= d["transfer_splice"] <= 1.0, "[distill] transfer_splice must lie in 0..1"),
        (1 <= d["transfer_rounds"] <= 100, "[distill] transfer_rounds must lie in 1..100"),
        (set(d["transfer_augment"]) <= set(AUGMENTS) and len(set(d["transfer_augment"])) == len(d["transfer_augment"]),
         f"[distill] transfer_augment: each of {', '.join(AUGMENTS)} at most once"),
        (d["select"] in ("auto", "accuracy", "loss", "last", "average"),
         "[distill] select must be auto, accuracy, loss, last or average"),
        (0.0 <= d["average_from"] < 1.0, "[distill] average_from must lie in 0..1 (1 excluded)"),
        (0.0 <= cfg["prune"]["sparsity"] <= 0.95, "[prune] sparsity must lie in 0..0.95"),
        (0.0 <= cfg["prune"]["start"] < cfg["prune"]["end"] <= 1.0, "[prune] needs 0 <= start < end <= 1"),
        (all(0 <= v <= MAX_EPOCHS for v in (t["epochs"], t["finetune_epochs"], d["warmup_epochs"], d["epochs"], cfg["qat"]["epochs"])),
         f"epochs must lie in 0..{MAX_EPOCHS}"),
        (d["batch_size"] <= 65536 and t["batch_size"] <= 65536, "batch sizes must be at most 65536"),
        (t["width"] <= 4096 and t["ff"] <= 16384 and t["depth"] <= 48 and t["heads"] <= 64,
         "[teacher] width <= 4096, ff <= 16384, depth <= 48, heads <= 64"),
        (cfg["run"]["threads"] <= 256, "[run] threads must be at most 256"),
        (cfg["run"]["seed"] < 2**32 and t["seed"] < 2**32, "seeds must be below 2^32"),
        (all(float(v).is_integer() and v >= 1 for v in d["align_layers"]),
         "[distill] align_layers are 1-based teacher layer numbers"),
        (cfg["run"]["threads"] >= 1, "[run] threads must be >= 1"),
        (cfg["run"]["seed"] >= 0 and t["seed"] >= 0, "seeds must be >= 0"),
        (d["weight_decay"] >= 0, "[distill] weight_decay must be >= 0"),
        (t["width"] >= 1 and t["ff"] >= 1, "[teacher] width and ff must be >= 1"),
        (cfg["qat"]["epochs"] >= 0 and cfg["qat"]["lr"] > 0, "[qat] epochs must be >= 0 and lr > 0"),
    ]
    for ok, message in rules:
        if not ok:
            raise UserError(f"{source}: {message}")
    for kind in t["kind"].split("+"):
        if kind in ("onnx", "logits") and not t["path"]:
            raise UserError(f"{source}: [teacher] kind = {kind!r} needs [teacher] path (or --teacher-path)")
    return cfg


def parse_assignment(text: str) -> tuple[str, str, object]:
    """``section.key=value`` (value in TOML syntax, bare words as strings) -> (section, key, value)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise UserError(f"--set {text}: expected section.key=value, e.g. --set distill.alpha=0.5")
    name, raw = text.split("=", 1)
    section, key = name.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def to_toml(cfg: dict) -> str:
    """The resolved configuration as TOML, with each setting's help as a comment."""
    lines = ["# kd2mcu train: the resolved configuration of this run (kd2mcu train --config this-file)"]
    for section, keys in cfg.items():
        lines.append(f"\n[{section}]")
        for key, value in keys.items():
            lines.append(f"{key} = {_toml_value(value)}  # {DEFAULTS[section][key][1]}")
    return "\n".join(lines) + "\n"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"
