"""Sentence vectors (all-MiniLM-L6-v2, int8 ONNX) and nearest-neighbour class scores.

Contract:

* :func:`load_encoder` returns an :class:`Encoder`, or ``None`` when the model cannot be
  used (``enabled=False`` — ``BOT_SEMANTIC=off``, read by ``bot.config`` —, ``onnxruntime``
  not installed, the model file
  missing or broken). It logs why ONCE per process and never raises: the matcher then runs
  on its rapidfuzz/TF-IDF blend alone.
* :class:`Encoder` turns texts into unit-length 384-d float32 vectors, one thread, no
  network; the model and tokenizer come from ``bot/core/model/`` (committed, Apache-2.0);
  the WordPiece step is plain Python (bot/core/wordpiece.py), so no ``tokenizers``.
* :class:`SemanticIndex` holds the vectors of a library (text -> class index). The library's
  vectors are cached on disk (the encoder's ``cache_dir``: ``BOT_CACHE_DIR`` through
  ``bot.config``, default ``~/.cache/backup-rescue-bot``) in a file named by the hash of the
  model and the texts, so a warm start reads one file; a
  cold start computes them in batches and says so in the log. :meth:`SemanticIndex.scores`
  gives per class the mean cosine of the ``k`` nearest examples (0..1).
  :meth:`SemanticIndex.add` appends examples at run time (agents' learned examples).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .wordpiece import WordPiece

log = logging.getLogger(__name__)

MODEL_DIR = Path(__file__).resolve().parent / "model"
MODEL_FILE = "minilm-l6-v2.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
MAX_TOKENS = 128  # long stories: the first ~90 words carry the problem
DIM = 384
BATCH = 32
RECENT = 1024  # message vectors remembered (exact text)

_warned: set[str] = set()  # reasons already logged (say it once per process)


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        log.warning("semantic matcher off, rapidfuzz blend only: %s", reason)


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "backup-rescue-bot"


class Encoder:
    """all-MiniLM-L6-v2 through onnxruntime (pooling and normalisation are in the graph)."""

    def __init__(self, session: Any, tokenizer: Any, fingerprint: str, cache_dir: Path | None = None) -> None:
        self._session = session
        self._tok = tokenizer
        self.fingerprint = fingerprint
        self.cache_dir = cache_dir or default_cache_dir()  # where library vectors are kept
        # recent texts' vectors, least recently used first: the matcher and the answer cards
        # share one run per message, and short texts come back from many users ("yes", "still
        # not working", "icloud storage full"); RECENT x 384 floats is about 1.5 MB
        self._recent: OrderedDict[str, Any] = OrderedDict()

    def encode_one(self, text: str) -> Any:
        """One message's vector; the last ``RECENT`` texts are remembered."""
        vec = self._recent.get(text)
        if vec is None:
            vec = self.encode([text])[0]
            vec.flags.writeable = False  # shared by every caller with the same text
            if len(self._recent) >= RECENT:
                self._recent.popitem(last=False)
            self._recent[text] = vec
        else:
            self._recent.move_to_end(text)
        return vec

    def encode(self, texts: Sequence[str]) -> Any:
        """Unit vectors, shape (len(texts), 384), float32."""
        import numpy as np

        out = np.zeros((len(texts), DIM), dtype=np.float32)
        # similar lengths together: less padding per batch
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            enc = [self._tok.encode(texts[i], MAX_TOKENS) for i in idx]
            width = max(len(e) for e in enc)
            ids = np.zeros((len(enc), width), dtype=np.int64)
            mask = np.zeros((len(enc), width), dtype=np.int64)
            for row, e in enumerate(enc):
                ids[row, : len(e)] = e
                mask[row, : len(e)] = 1
            vec = self._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            out[idx] = vec
        return out


def load_encoder(model_dir: Path | None = None, *, enabled: bool = True,
                 cache_dir: Path | None = None) -> Encoder | None:
    """The encoder, or None (logged once) when it cannot run here or is not ``enabled``;
    ``cache_dir``: where the library's vectors are kept (default ``~/.cache/backup-rescue-bot``)."""
    if not enabled:
        _warn_once("BOT_SEMANTIC is off")
        return None
    model_dir = model_dir or MODEL_DIR
    try:
        import numpy  # noqa: F401
        import onnxruntime as ort
    except ImportError as exc:
        _warn_once(f"{exc.name or exc} is not installed")
        return None
    model = model_dir / MODEL_FILE
    try:
        data = model.read_bytes()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # one core per message: p99 stays flat under load
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        session = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        names = {i.name for i in session.get_inputs()}
        if names != {"input_ids", "attention_mask"}:
            raise ValueError(f"unexpected model inputs {sorted(names)}")
    except (OSError, ValueError, RuntimeError, ort.capi.onnxruntime_pybind11_state.Fail,
            ort.capi.onnxruntime_pybind11_state.InvalidProtobuf,
            ort.capi.onnxruntime_pybind11_state.InvalidGraph) as exc:
        _warn_once(f"cannot load {model}: {type(exc).__name__}: {exc}")
        return None
    tok_path = model_dir / TOKENIZER_FILE
    try:
        tok = WordPiece.from_file(tok_path)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # ValueError includes bad JSON
        _warn_once(f"cannot load {tok_path}: {type(exc).__name__}: {exc}")
        return None
    return Encoder(session, tok, hashlib.sha256(data).hexdigest()[:16], cache_dir)


def cached_vectors(encoder: Encoder, texts: Sequence[str], cache: Path | None = None) -> Any:
    """The vectors of ``texts``, from the disk cache when the model and texts are unchanged."""
    import numpy as np

    texts = list(texts)
    key = hashlib.sha256(("\x00".join([encoder.fingerprint, *texts])).encode("utf-8")).hexdigest()[:24]
    folder = cache if cache is not None else encoder.cache_dir
    path = folder / f"library-{key}.npy"
    try:
        vecs = np.load(path, allow_pickle=False)
        if vecs.shape == (len(texts), DIM):
            return vecs
    except (OSError, ValueError):
        pass
    t0 = time.perf_counter()
    log.warning("semantic matcher: computing %d library vectors (first start with this content)...", len(texts))
    vecs = encoder.encode(texts)
    log.warning("semantic matcher: %d vectors in %.1f s, cached in %s", len(texts), time.perf_counter() - t0, path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            np.save(fh, vecs, allow_pickle=False)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home: works, only slower at the next start
        log.warning("semantic matcher: cannot cache vectors in %s: %s", folder, exc)
    return vecs


class SemanticIndex:
    """Vectors of a library's examples; per class, the mean cosine of the k nearest."""

    def __init__(self, encoder: Encoder, texts: Sequence[str], classes: Sequence[int], n_classes: int,
                 *, k: int = 3, cache: Path | None = None) -> None:
        import numpy as np

        self._np = np
        self.encoder = encoder
        self.k = k
        self.n_classes = n_classes
        self._vecs = self._library_vectors(list(texts), cache)
        self._cls = np.asarray(classes, dtype=np.int64)
        self._rebuild_masks()

    def _library_vectors(self, texts: list[str], cache: Path | None) -> Any:
        return cached_vectors(self.encoder, texts, cache)

    def _rebuild_masks(self) -> None:
        np = self._np
        members = [np.flatnonzero(self._cls == c) for c in range(self.n_classes)]
        width = max(1, max(len(m) for m in members))
        pad = len(self._cls)  # points at a -inf appended to the similarities
        self._pad = np.full((self.n_classes, width), pad, dtype=np.int64)
        for c, m in enumerate(members):
            self._pad[c, : len(m)] = m
        self._kk = min(self.k, width)
        self._count = np.array([min(self.k, len(m)) for m in members], dtype=np.float32)

    def __len__(self) -> int:
        return int(self._vecs.shape[0])

    def vector(self, text: str) -> Any:
        return self.encoder.encode_one(text)

    def scores(self, text: str, exclude: int | None = None) -> list[float]:
        """Per class: mean cosine of the k nearest examples, clipped to 0..1."""
        return self.scores_for(self.vector(text), exclude)

    def scores_for(self, vec: Any, exclude: int | None = None) -> list[float]:
        np = self._np
        # einsum, not "@": BLAS would wake its thread pool for a 1 000 x 384 product, which
        # costs more than the product itself on a busy machine
        sims = np.einsum("ij,j->i", self._vecs, vec)
        if exclude is not None:
            sims[exclude] = -np.inf
        grid = np.append(sims, -np.inf)[self._pad]  # classes x widest class
        top = np.partition(grid, grid.shape[1] - self._kk, axis=1)[:, -self._kk :]
        top = np.where(np.isfinite(top), top, 0.0).sum(axis=1) / np.maximum(self._count, 1.0)
        return [max(0.0, float(x)) for x in top]

    def add(self, texts: Sequence[str], classes: Sequence[int]) -> None:
        """Append examples (learned at run time); vectors computed now, not cached."""
        if not texts:
            return
        np = self._np
        self._vecs = np.vstack([self._vecs, self.encoder.encode(list(texts))])
        self._cls = np.concatenate([self._cls, np.asarray(classes, dtype=np.int64)])
        self._rebuild_masks()
