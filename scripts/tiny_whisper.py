"""A tiny Whisper model for CTranslate2 (faster-whisper's format) that always says one script,
built in well under a second from numpy: the tests and the benchmark run the real faster-whisper
code (loading, features, tokenizer, decoding, word alignment) with no download.

    .venv/bin/python scripts/tiny_whisper.py DIR ["the words it always says"]

Random weights would say random words; this model's decoder ignores its layers (their output
branches are zero) and its output projection reads the position alone, so with temperature 0 it
emits, after the prompt, `<|0.00|>`, the script's words, `<|1.00|>` and `<|endoftext|>`. Its
encoder and cross-attention still run on the audio, so the cost of features and encoding is
paid, at the scale of a 64-wide model (tiny.en is 384 wide: far more work per second of audio).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

WIDTH, LAYERS, HEADS, MELS = 64, 2, 2, 80
LANGUAGES = ["en", "fr", "de", "es"]
TIMESTAMPS = 1501  # <|0.00|> to <|30.00|>
SCRIPT = "hello from the tiny model"


def vocabulary(words: list[str]) -> list[str]:
    """Whisper's order: text tokens (an empty one first: CTranslate2 4.7+ takes a model with it
    for multilingual), <|endoftext|> after every text token (decoding drops all from its id up),
    the special tokens, and the timestamps right after <|notimestamps|>."""
    text = ["", "<unk>", *(f"\u0120{w}" for w in words)]  # \u0120: byte-level BPE's space
    special = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in LANGUAGES),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
    ]
    return text + special + [f"<|{i * 0.02:.2f}|>" for i in range(TIMESTAMPS)]


def tokenizer_json(tokens: list[str]) -> str:
    """A `tokenizers` word-level tokenizer whose ids are the vocabulary's order."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    words = {t: i for i, t in enumerate(tokens) if not t.startswith("<|")}
    tokenizer = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([t for t in tokens if t.startswith("<|")])
    return tokenizer.to_str()


def build(folder: Path, script: str = SCRIPT, seed: int = 0) -> Path:
    """Writes the model into `folder` (model.bin, config.json, vocabulary, tokenizer.json)."""
    from ctranslate2.specs import WhisperSpec

    rng = np.random.default_rng(seed)
    words = script.split()
    tokens = vocabulary(sorted(set(words)))
    ids = {t: i for i, t in enumerate(tokens)}
    spec = WhisperSpec(LAYERS, HEADS, LAYERS, HEADS)

    def small(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def linear(layer: Any, rows: int, cols: int = WIDTH, zero: bool = False) -> None:
        layer.weight = np.zeros((rows, cols), np.float32) if zero else small(rows, cols)
        layer.bias = np.zeros(rows, np.float32)

    def norm(layer: Any) -> None:
        layer.gamma = np.ones(WIDTH, np.float32)
        layer.beta = np.zeros(WIDTH, np.float32)

    encoder, decoder = spec.encoder, spec.decoder
    encoder.conv1.weight, encoder.conv1.bias = small(WIDTH, MELS, 3), small(WIDTH)
    encoder.conv2.weight, encoder.conv2.bias = small(WIDTH, WIDTH, 3), small(WIDTH)
    encoder.position_encodings.encodings = small(1500, WIDTH)  # 3000 frames, stride 2
    norm(encoder.layer_norm)
    for layer in encoder.layer:
        norm(layer.self_attention.layer_norm)
        linear(layer.self_attention.linear[0], 3 * WIDTH)  # q, k, v fused
        linear(layer.self_attention.linear[1], WIDTH)
        norm(layer.ffn.layer_norm)
        linear(layer.ffn.linear_0, 4 * WIDTH)
        linear(layer.ffn.linear_1, WIDTH, 4 * WIDTH)
    for layer in decoder.layer:  # every output branch zero: the residual stream is the input
        norm(layer.self_attention.layer_norm)
        linear(layer.self_attention.linear[0], 3 * WIDTH)
        linear(layer.self_attention.linear[1], WIDTH, zero=True)
        norm(layer.attention.layer_norm)
        linear(layer.attention.linear[0], WIDTH)  # q
        linear(layer.attention.linear[1], 2 * WIDTH)  # k, v fused
        linear(layer.attention.linear[2], WIDTH, zero=True)
        norm(layer.ffn.layer_norm)
        linear(layer.ffn.linear_0, 4 * WIDTH)
        linear(layer.ffn.linear_1, WIDTH, 4 * WIDTH, zero=True)
    norm(decoder.layer_norm)
    decoder.embeddings.weight = np.zeros((len(tokens), WIDTH), np.float32)
    decoder.position_encodings.encodings = 10 * np.eye(448, WIDTH, dtype=np.float32)
    decoder.projection.weight = _projection(ids, words)
    spec.register_vocabulary(tokens)
    spec.config.lang_ids = [ids[f"<|{code}|>"] for code in LANGUAGES]
    spec.config.alignment_heads = [(LAYERS - 1, head) for head in range(HEADS)]
    spec.config.suppress_ids, spec.config.suppress_ids_begin = [], [ids["<|endoftext|>"]]
    spec.validate()
    spec.optimize()
    folder.mkdir(parents=True, exist_ok=True)
    spec.save(str(folder))
    (folder / "tokenizer.json").write_text(tokenizer_json(tokens))
    return folder


def _projection(ids: dict[str, int], words: list[str]) -> np.ndarray:
    """Row `token`, column `position`: what the decoder emits at each position of its sequence
    (<|startoftranscript|> <|en|> <|transcribe|> come first, then the output)."""
    said = ["<|en|>", "<|transcribe|>", "<|0.00|>", *(f"\u0120{w}" for w in words)]
    said += ["<|1.00|>", "<|endoftext|>"]
    weight = np.zeros((len(ids), WIDTH), np.float32)
    for position, token in enumerate(said):
        weight[ids[token], position] = 20.0
    weight[ids["<|endoftext|>"], len(said) :] = 20.0  # should decoding ever go on
    return weight


if __name__ == "__main__":
    print(build(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else SCRIPT))
