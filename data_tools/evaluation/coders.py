"""Discriminative ICD coders that train on a CPU at MIMIC scale: TF-IDF one-vs-rest and nearest neighbours.

Both map note texts to a documents × codes matrix of scores in [0, 1] over a fixed code list, so
``data_tools.evaluation.thresholds`` can tune one global threshold on them and ``data_tools.evaluation.candidates``
can rank them. Codes without a training occurrence score 0 (never a candidate).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from tqdm import tqdm

CHUNK_ROWS = 1024
"""Query rows scored at once: bounds the dense documents × codes (or × training notes) block in memory."""


def label_matrix(code_lists: Sequence[Sequence[str]], codes: Sequence[str]) -> sparse.csr_matrix:
    """Sparse 0/1 documents × codes matrix; codes outside ``codes`` are ignored, repeats count once."""
    index = {c: j for j, c in enumerate(codes)}
    rows, cols = [], []
    for i, doc in enumerate(code_lists):
        for j in {index[c] for c in doc if c in index}:
            rows.append(i)
            cols.append(j)
    data = np.ones(len(rows), dtype=np.float32)
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(code_lists), len(codes)), dtype=np.float32)


def _word_vectorizer(max_features: int, ngrams: tuple[int, int]):
    from sklearn.feature_extraction.text import TfidfVectorizer

    # Words keep digits (doses, values) and drop punctuation; min_df=2 keeps one-note strings (names) out.
    return TfidfVectorizer(ngram_range=ngrams, min_df=2, max_df=0.9, max_features=max_features, sublinear_tf=True,
                           token_pattern=r"(?u)\b\w+\b", dtype=np.float32)


def _char_vectorizer(max_features: int):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2, max_df=0.9, max_features=max_features,
                           sublinear_tf=True, dtype=np.float32)


def _strip(vectorizer) -> None:
    """Drop the terms pruned by min_df/max_df/max_features: large, and one-note strings may identify a patient."""
    if hasattr(vectorizer, "stop_words_"):
        del vectorizer.stop_words_


class Featurizer:
    """TF-IDF word (1-2)-grams and optionally character (3-5)-grams, rows L2-normalised.

    Fitted on texts only (vocabulary, idf), never on labels: cross-fitting reuses one fitted featurizer.
    """

    def __init__(self, word_features: int, char_features: int = 0, char_ngrams: bool = False) -> None:
        self.word = _word_vectorizer(word_features, (1, 2))
        self.char = _char_vectorizer(char_features) if char_ngrams else None

    def fit_transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        from sklearn.preprocessing import normalize

        parts = [self.word.fit_transform(texts)] + ([self.char.fit_transform(texts)] if self.char else [])
        for vectorizer in (self.word, self.char):
            if vectorizer is not None:
                _strip(vectorizer)
        return normalize(sparse.hstack(parts, format="csr", dtype=np.float32))

    def transform(self, texts: Sequence[str]) -> sparse.csr_matrix:
        from sklearn.preprocessing import normalize

        parts = [self.word.transform(texts)] + ([self.char.transform(texts)] if self.char else [])
        return normalize(sparse.hstack(parts, format="csr", dtype=np.float32))


class _Coder:
    """Shared API: ``fit``/``predict_proba`` on texts; ``fit_features``/``predict_features`` on featurized rows."""

    def fit(self, texts: Sequence[str], code_lists: Sequence[Sequence[str]], codes: Sequence[str]):
        self.featurizer = self.make_featurizer()
        return self.fit_features(self.featurizer.fit_transform(texts), code_lists, codes)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), len(self.codes)), dtype=np.float32)
        for lo in range(0, len(texts), CHUNK_ROWS):
            out[lo: lo + CHUNK_ROWS] = self.predict_features(self.featurizer.transform(texts[lo: lo + CHUNK_ROWS]))
        return out


class LinearCoder(_Coder):
    """TF-IDF word (1-2)-grams + character (3-5)-grams, one L2 logistic regression per code (liblinear).

    Each code trains on its positives and at most ``max_negatives`` sampled negatives; the intercept is
    shifted by log(sampling rate) so probabilities stay on the scale of the full data (one global threshold
    must compare codes). Weights below ``prune`` in magnitude are dropped (as DiSMEC does), so the model
    is a sparse features × codes matrix.
    """

    kind = "linear"

    def __init__(self, *, c: float = 8.0, max_negatives: int = 1000, word_features: int = 200_000,
                 char_features: int = 100_000, char_ngrams: bool = True, prune: float = 0.2, seed: int = 0,
                 n_jobs: int = 2, progress: bool = True) -> None:
        self.params = dict(c=c, max_negatives=max_negatives, word_features=word_features,
                           char_features=char_features, char_ngrams=char_ngrams, prune=prune, seed=seed)
        self.n_jobs, self.progress = n_jobs, progress

    def make_featurizer(self) -> Featurizer:
        return Featurizer(self.params["word_features"], self.params["char_features"], self.params["char_ngrams"])

    def fit_features(self, x: sparse.csr_matrix, code_lists: Sequence[Sequence[str]],
                     codes: Sequence[str]) -> LinearCoder:
        from joblib import Parallel, delayed

        self.codes = list(codes)
        y = label_matrix(code_lists, self.codes).tocsc()
        n = x.shape[0]
        trained = [j for j in range(len(self.codes)) if y.indptr[j + 1] > y.indptr[j]]
        jobs = (delayed(self._fit_one)(x, y.indices[y.indptr[j]:y.indptr[j + 1]], n, j) for j in trained)
        # liblinear releases the GIL, so threads share the feature matrix without copies.
        results = Parallel(n_jobs=self.n_jobs, backend="threading", return_as="generator")(jobs)
        rows, cols, vals = [], [], []
        self.bias_ = np.full(len(self.codes), -np.inf, dtype=np.float64)
        for j, (idx, w, b) in zip(trained, tqdm(results, total=len(trained), desc="linear coder: codes",
                                                unit="code", disable=not self.progress, leave=False)):
            rows.append(idx)
            cols.append(np.full(len(idx), j, dtype=np.int64))
            vals.append(w)
            self.bias_[j] = b
        rows_a = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        cols_a = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        vals_a = np.concatenate(vals) if vals else np.zeros(0, dtype=np.float32)
        self.weights_ = sparse.csc_matrix((vals_a, (rows_a, cols_a)), shape=(x.shape[1], len(self.codes)),
                                          dtype=np.float32)
        return self

    def _fit_one(self, x: sparse.csr_matrix, positives: np.ndarray, n: int, j: int):
        from sklearn.linear_model import LogisticRegression

        negatives = np.setdiff1d(np.arange(n), positives, assume_unique=True)
        if len(negatives) == 0:  # every training note has the code
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), 30.0
        rate = 1.0
        if len(negatives) > self.params["max_negatives"]:
            rng = np.random.default_rng([self.params["seed"], j])
            negatives = np.sort(rng.choice(negatives, self.params["max_negatives"], replace=False))
            rate = len(negatives) / (n - len(positives))
        rows = np.concatenate([positives, negatives])
        target = np.zeros(len(rows), dtype=np.int8)
        target[: len(positives)] = 1
        # The dual solver: far faster than the primal one when features outnumber a code's rows.
        model = LogisticRegression(C=self.params["c"], solver="liblinear", dual=True, max_iter=500)
        model.fit(x[rows], target)
        w = model.coef_[0]
        keep = np.flatnonzero(np.abs(w) >= self.params["prune"])
        return keep, w[keep].astype(np.float32), float(model.intercept_[0]) + float(np.log(rate))

    def predict_features(self, x: sparse.csr_matrix) -> np.ndarray:
        logits = (x @ self.weights_).toarray().astype(np.float64) + self.bias_
        with np.errstate(over="ignore"):
            return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)  # bias -inf (untrained code) → 0


class KnnCoder(_Coder):
    """Codes of the ``k`` most similar training notes (TF-IDF word (1-2)-gram cosine), weighted by similarity.

    A code's score is the similarity mass of the neighbours that carry it over the mass of all ``k``: 1 when
    every neighbour has it, 0 when none does.
    """

    kind = "knn"

    def __init__(self, *, k: int = 20, word_features: int = 200_000, progress: bool = True) -> None:
        self.params = dict(k=k, word_features=word_features)
        self.progress = progress

    def make_featurizer(self) -> Featurizer:
        return Featurizer(self.params["word_features"])

    def fit_features(self, x: sparse.csr_matrix, code_lists: Sequence[Sequence[str]], codes: Sequence[str]) -> KnnCoder:
        self.codes = list(codes)
        self.train_ = x.T.tocsr()  # features × training notes
        self.labels_ = label_matrix(code_lists, self.codes)
        return self

    def predict_features(self, x: sparse.csr_matrix) -> np.ndarray:
        n_train = self.labels_.shape[0]
        k = min(self.params["k"], n_train)
        out = np.zeros((x.shape[0], len(self.codes)), dtype=np.float32)
        for lo in range(0, x.shape[0], CHUNK_ROWS):
            sims = (x[lo: lo + CHUNK_ROWS] @ self.train_).toarray()
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            weights = np.clip(np.take_along_axis(sims, top, axis=1), 0.0, None)
            neighbours = sparse.csr_matrix((weights.ravel(), top.ravel(), np.arange(0, weights.size + 1, k)),
                                           shape=(len(sims), n_train))
            mass = weights.sum(axis=1, keepdims=True)
            scores = (neighbours @ self.labels_).toarray()
            out[lo: lo + len(sims)] = np.divide(scores, mass, out=np.zeros_like(scores), where=mass > 0)
        return np.clip(out, 0.0, 1.0)


CODERS = {"linear": LinearCoder, "knn": KnnCoder}
