"""Train a small float LSTM classifier on BasicMotions (shipped inside the aeon package) and export
it to ONNX, with the train/test splits as kd2mcu data files (.npz: x float32 [N, T, F], y int).

Features are standardized with the training split's per-channel mean and std (stored in
norm.json). This is the float starting point the main job quantizes; distillation comes later.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load_basic_motions():
    from aeon.datasets import load_basic_motions

    xtr, ytr = load_basic_motions(split="train")
    xte, yte = load_basic_motions(split="test")
    labels = sorted(set(ytr))
    index = {name: k for k, name in enumerate(labels)}
    to_ntf = lambda x: np.ascontiguousarray(np.transpose(x, (0, 2, 1))).astype(np.float32)  # [N, C, T] -> [N, T, C]
    return (to_ntf(xtr), np.array([index[v] for v in ytr]), to_ntf(xte), np.array([index[v] for v in yte]), labels)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import warnings

    import torch
    from tqdm import tqdm

    warnings.filterwarnings("ignore", category=UserWarning)  # the exporter's notes on batch size
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    torch.manual_seed(args.seed)
    xtr, ytr, xte, yte, labels = load_basic_motions()
    mean, std = xtr.mean(axis=(0, 1)), xtr.std(axis=(0, 1)) + 1e-6
    xtr, xte = (xtr - mean) / std, (xte - mean) / std

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(xtr.shape[2], args.hidden, batch_first=True)
            self.head = torch.nn.Linear(args.hidden, len(labels))

        def forward(self, x):
            _, (h, _) = self.lstm(x)
            return self.head(h[-1])

    model = Classifier()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for _ in tqdm(range(args.epochs), desc="train float LSTM", unit="epoch"):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 8):
            idx = perm[i:i + 8]
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean())
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "train.npz", x=xtr, y=ytr)
    np.savez(args.out / "test.npz", x=xte, y=yte)
    (args.out / "norm.json").write_text(json.dumps({"mean": mean.tolist(), "std": std.tolist(), "labels": labels}))
    torch.onnx.export(model, (torch.from_numpy(xtr[:1]),), str(args.out / "model.onnx"), dynamo=False,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "batch"}})
    print(f"float LSTM test accuracy {acc:.2%} ({len(yte)} samples); exported {args.out / 'model.onnx'}")


if __name__ == "__main__":
    main()
