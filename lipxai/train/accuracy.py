"""Logits over a split in batches, clean and certified accuracy (the training's evaluations)."""

from __future__ import annotations

import numpy as np

from lipxai import certify, data


def predict_logits(predict, variables, images, *, batch_size: int = 1000, normalize=None) -> np.ndarray:
    """Logits of ``predict(variables, x)`` over uint8 ``images``, in batches (host numpy)."""
    chunks = []
    for start in range(0, len(images), batch_size):
        x = data.preprocess(images[start:start + batch_size], normalize=normalize)
        chunks.append(np.asarray(predict(variables, x)))
    return np.concatenate(chunks)


def accuracy_report(logits, labels, eps, *, lipschitz: float = 1.0) -> dict:
    """``{"clean_accuracy", "certified_accuracy": {str(eps): value}, "n"}`` (L2 certificates)."""
    eps = tuple(float(e) for e in eps)
    cert = np.asarray(certify.certified_accuracy(logits, labels, np.asarray(eps, np.float32),
                                                 lipschitz=lipschitz))
    return {
        "clean_accuracy": float(np.mean(np.argmax(logits, -1) == labels)),
        "certified_accuracy": {_eps_key(e): float(c) for e, c in zip(eps, cert, strict=True)},
        "n": len(labels),
    }


def _eps_key(e: float) -> str:
    """The certify.json key of a radius: ``1.0 -> "1.0"``, ``0.5 -> "0.5"``, ``1.58 -> "1.58"``."""
    text = f"{e:g}"
    return text if any(c in text for c in ".e") else f"{e:.1f}"
