"""The ``rocket`` teacher for sensor data: MiniRocket features (aeon) and a logistic regression
(scikit-learn) on them, whose log-probabilities are the teacher's logits (calibrated by the
regression's own likelihood fit, so temperature-scaled soft targets mean what they say).

Where data is tiny (a few dozen training series) a convolutional-kernel classifier is far more accurate
than a transformer trained from scratch: on ArrowHead (36 training series) MiniRocket reaches about 87%
where the transformer reaches about 41% (``benchmarks/accuracy_panel.py``). It has no hidden states to
align with (``[distill] beta`` is ignored) and is not an ONNX-exportable transformer. Alone it is an
option (``--teacher rocket``); the default teacher on sensor data (``[teacher] kind = "auto"``) is the
ensemble of the transformer and this one.

It is fitted on the training and the validation split (what MiniRocket is given in
``benchmarks/accuracy_panel.py``): on 31 training series (ArrowHead) the 5 validation series are 16% more
data. Its validation logits, which the validation accuracy, the ensemble weights and stage 2's choice of
epoch read, come from a second fit on the training split alone, so they stay held out.

The series are the task's normalized sequences, frame stacking undone ([N, F, T]); padded steps are
zeros, as the student sees them.
"""
from __future__ import annotations

import numpy as np

from kd2mcu.errors import UserError
from kd2mcu.train.datasets import TaskData
from kd2mcu.train.teacher import SPLITS, TeacherOutputs

LOGISTIC_C = 1.0  # inverse regularization of the regression on standardized MiniRocket features
MIN_SERIES_STEPS = 9  # MiniRocket's kernels have length 9


def _series(task: TaskData, x: np.ndarray) -> np.ndarray:
    F = task.num_features // task.frame_stack
    n, steps, _ = x.shape
    return np.ascontiguousarray(x.reshape(n, steps * task.frame_stack, F).transpose(0, 2, 1)).astype(np.float64)


def fit(task: TaskData, tcfg: dict, quiet: bool = True) -> TeacherOutputs:
    if task.kind != "sequence":
        raise UserError("[teacher] kind = rocket is for sensor sequences; for text use the transformer or "
                        "pretrained teacher")
    try:
        import aeon.transformations.collection.convolution_based  # noqa: F401
        import sklearn.linear_model  # noqa: F401
    except ImportError:
        raise UserError("[teacher] kind = rocket needs aeon and scikit-learn: pip install 'kd2mcu[data]'") from None
    x_train = _series(task, task.x_train)
    if x_train.shape[2] < MIN_SERIES_STEPS:
        raise UserError(f"[teacher] kind = rocket needs series of at least {MIN_SERIES_STEPS} steps "
                        f"(these have {x_train.shape[2]}); use the transformer teacher")
    held_out = _fit(x_train, task.y_train, tcfg)
    x_val = _series(task, task.x_val) if len(task.y_val) else None
    # The teacher that labels the training split, the transfer set and the test split learns from every
    # labelled series; its validation logits come from the fit that never saw them.
    full = _fit(np.concatenate([x_train, x_val]), np.concatenate([task.y_train, task.y_val]), tcfg) \
        if x_val is not None else held_out
    out = TeacherOutputs(logits={}, per_step=False, params=full.params,
                         description="MiniRocket features (aeon) + logistic regression, fitted here on the "
                                     "training and validation splits (validation logits: fitted on training alone)")

    def label(x, lengths=None):
        """Logits of new series; a class the fit never saw gets ~0 probability."""
        return full.logits(_series(task, x), task.num_classes)

    for split in SPLITS:
        x = getattr(task, f"x_{split}")
        fit_ = held_out if split == "val" else full
        out.logits[split] = fit_.logits(_series(task, x), task.num_classes) if len(x) else \
            np.zeros((0, task.num_classes), np.float32)
    out.label = label
    return out


class _Fit:
    """MiniRocket kernels, a feature scaler and a logistic regression fitted on one set of series."""

    def __init__(self, rocket, scaler, clf):
        self.rocket, self.scaler, self.clf = rocket, scaler, clf
        self.params = int(clf.coef_.size + clf.intercept_.size)

    def logits(self, series: np.ndarray, num_classes: int) -> np.ndarray:
        features = self.scaler.transform(self.rocket.transform(series))
        logits = np.full((len(features), num_classes), -30.0, np.float32)
        logits[:, self.clf.classes_] = np.maximum(self.clf.predict_log_proba(features), -30.0)
        return logits


def _fit(series: np.ndarray, y: np.ndarray, tcfg: dict) -> _Fit:
    from aeon.transformations.collection.convolution_based import MiniRocket
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rocket = MiniRocket(random_state=int(tcfg["seed"]), n_jobs=1).fit(series)
    scaler = StandardScaler()
    features = scaler.fit_transform(rocket.transform(series))
    return _Fit(rocket, scaler, LogisticRegression(C=LOGISTIC_C, max_iter=2000).fit(features, y))
