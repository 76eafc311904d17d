"""The ``rocket`` teacher for sensor data: MiniRocket features (aeon) and a logistic regression
(scikit-learn) on them, whose log-probabilities are the teacher's logits (calibrated by the
regression's own likelihood fit, so temperature-scaled soft targets mean what they say).

Where data is tiny (a few dozen training series) a convolutional-kernel classifier is far more accurate
than a transformer trained from scratch: on ArrowHead (36 training series) MiniRocket reaches about 87%
where the transformer reaches about 41% (``benchmarks/accuracy_panel.py``). It has no hidden states to
align with (``[distill] beta`` is ignored) and is not an ONNX-exportable transformer. Alone it is an
option (``--teacher rocket``); the default teacher on sensor data (``[teacher] kind = "auto"``) is the
ensemble of the transformer and this one.

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
        from aeon.transformations.collection.convolution_based import MiniRocket
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise UserError("[teacher] kind = rocket needs aeon and scikit-learn: pip install 'kd2mcu[data]'") from None
    x_train = _series(task, task.x_train)
    if x_train.shape[2] < MIN_SERIES_STEPS:
        raise UserError(f"[teacher] kind = rocket needs series of at least {MIN_SERIES_STEPS} steps "
                        f"(these have {x_train.shape[2]}); use the transformer teacher")
    rocket = MiniRocket(random_state=int(tcfg["seed"]), n_jobs=1).fit(x_train)
    scaler = StandardScaler()
    train_features = scaler.fit_transform(rocket.transform(x_train))
    clf = LogisticRegression(C=LOGISTIC_C, max_iter=2000).fit(train_features, task.y_train)
    out = TeacherOutputs(logits={}, per_step=False, params=int(clf.coef_.size + clf.intercept_.size),
                         description="MiniRocket features (aeon) + logistic regression, fitted here")

    def label(x, lengths=None, features=None):
        """Logits of new series (or of their MiniRocket features); a class the fit never saw gets ~0
        probability."""
        if features is None:
            features = scaler.transform(rocket.transform(_series(task, x)))
        logits = np.full((len(features), task.num_classes), -30.0, np.float32)
        logits[:, clf.classes_] = np.maximum(clf.predict_log_proba(features), -30.0)
        return logits

    for split in SPLITS:
        x = getattr(task, f"x_{split}")
        out.logits[split] = label(x, features=train_features if split == "train" else None) if len(x) else \
            np.zeros((0, task.num_classes), np.float32)
    out.label = label
    return out
