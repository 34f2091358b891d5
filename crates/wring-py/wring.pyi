"""Type stubs for the `wring` extension module (crates/wring-py/src/lib.rs); maturin ships this file as the
package's `__init__.pyi` (the repository root's wring.pyi links here, for `pip install .` there).

wring on the GPU from Python: `Model` (a GGUF language model), the wavelet codec on numpy arrays and vector
quantisation. Every call that runs on the GPU releases the GIL. `crates/wring-py/tests/test_stubs.py` checks that these
stubs name exactly what the module defines, with the same parameters and defaults.
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence, TypedDict

import numpy as np
import numpy.typing as npt

class Model:
    """A GGUF language model on the GPU wring chooses."""

    def __init__(
        self, path: str | os.PathLike[str], context: int = 2048, q8_activations: bool = True
    ) -> None:
        """Loads `path` with a KV cache of `context` positions; `q8_activations` rounds activations to 8
        bits in the Q4_0/Q4_1/Q8_0 products (faster; as `wring generate` does by default).
        Raises ValueError for a missing or malformed model, RuntimeError for the device."""
    @property
    def context(self) -> int:
        """Positions of the KV cache."""
    @property
    def vocab_size(self) -> int:
        """Tokens in the vocabulary."""
    @property
    def chat_template(self) -> str | None:
        """The model's chat template, if it has one."""
    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, as llama.cpp's tokenizer gives them."""
    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of token ids."""
    def generate(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] = ...,
    ) -> TextIterator:
        """Generates after `prompt`, returning an iterator over pieces of text as they are produced
        (whole characters; a stop string ends the text before it). Greedy at temperature 0. Dropping the
        iterator cancels the generation."""
    def complete(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] = ...,
    ) -> str:
        """The whole continuation as one string (`generate` joined)."""
    def generate_batch(
        self,
        prompts: Sequence[str],
        max_tokens: int = 64,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        stop: Sequence[str] = ...,
        parallel: int = 8,
    ) -> list[str]:
        """Continuations of every prompt at once (continuous batching over a paged KV cache), in the
        prompts' order; prompt i's sampler is seeded with `seed + i`."""
    def logits(self, text: str) -> npt.NDArray[np.float32]:
        """The f32 logits of every position of `text` from an empty cache, shape [tokens, vocab]."""
    def perplexity(self, text: str, context: int = 512, chunks: int | None = None) -> float:
        """Perplexity of `text` as llama-perplexity computes it: chunks of `context` tokens, the second
        half of each scored; at most `chunks` chunks."""

class TextIterator(Iterator[str]):
    """The pieces of text of one running generation, as `Model.generate` returns them."""

    def __iter__(self) -> TextIterator:
        """The iterator itself."""
    def __next__(self) -> str:
        """The next piece of text, waiting for it with the GIL released."""
    def cancel(self) -> None:
        """Stops the generation before its next token."""

class ShardReport(TypedDict):
    """What `encode_shard` did."""

    done: int
    skipped: int
    failed: list[tuple[str, str]]

def encode_image(
    image: npt.NDArray[np.uint8], quality: float | None = None, bpp: float | None = None
) -> bytes:
    """Compresses an image, uint8 [height, width] (gray) or [height, width, 3] (RGB), into a .wrg stream;
    `quality` 1-100 or a target `bpp`."""

def encode_audio(
    samples: npt.NDArray[np.int16],
    sample_rate: int,
    quality: float | None = None,
    kbps: float | None = None,
) -> bytes:
    """Compresses audio, int16 [samples, channels], into a .wrg stream; `quality` 1-100 or a target
    `kbps`."""

def encode_shard(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    index: int = 0,
    count: int = 1,
    list: bool = False,
    quality: float | None = None,
    bpp: float | None = None,
) -> ShardReport:
    """Encodes shard `index` of `count` of the images and WAV files in `input` (a directory, or with
    `list=True` a file of paths) into `output/<stem>.wrg`, as `wring encode DIR --shard I/N` does."""

def decode(
    data: bytes,
) -> npt.NDArray[np.uint8] | tuple[npt.NDArray[np.int16], int]:
    """Decodes a .wrg stream: an image as uint8 [h, w, c], or audio as (int16 [samples, channels],
    rate)."""

def vq_train(
    data: npt.NDArray[np.float32], k: int, iters: int = 25, seed: int = 0
) -> npt.NDArray[np.float32]:
    """k-means on the GPU: `k` centroids of the rows of `data` (float32 [n, d]), k-means++ seeded."""

def vq_search(
    codebook: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    k: int = 1,
    metric: str = "l2",
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.float32]]:
    """The `k` nearest codewords of each query: (ids uint32 [n, k], scores float32 [n, k]); `metric` is
    "l2" (squared distance, smallest first), "ip" (inner product) or "cosine" (largest first)."""
