"""A scripted tiny Whisper for the caption tests, decoded by the real faster-whisper.

The weights are set by hand (CTranslate2's ``WhisperSpec``) so that the model behaves like a
tiny state machine, whatever the audio:

- the decoder's output depends only on its current token (every layer's output projection is
  zero, so each position's hidden state is its token's embedding): ``<|startoftranscript|>`` →
  ``<|en|>``, ``<|transcribe|>`` → ``<|0.00|>`` → `` gg`` → `` wp`` → ``<|2.00|>`` →
  ``<|endoftext|>``, so every 30 s window of speech reads " gg wp" from 0.0 s to 2.0 s at beam
  size 1 (the default state of any other token is end of text);
- the encoder's output depends only on the frame's position (the convolutions are zero), an
  angle on two circles, and the alignment head's queries point at chosen angles: the query of
  ``<|notimestamps|>`` (which predicts " gg" when faster-whisper aligns words) looks at
  0.0-1.0 s, the one of " gg" (predicting " wp") at 1.0-2.0 s, the one of " wp" (predicting the
  end) at 2.0-3.0 s. So the word timestamps are " gg" 0.0-1.0 s and " wp" 1.0-2.0 s.

The folder holds what faster-whisper reads without the network: the CTranslate2 model,
``tokenizer.json`` (a byte-level BPE with Whisper's 51 865-token layout: 50 257 text tokens, the
special tokens, 99 languages and 1 501 timestamps) and ``preprocessor_config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

D_MODEL = 32  # width of the scripted model
VOCAB = 51865  # Whisper's multilingual vocabulary (CTranslate2 calls smaller ones English-only)
TEXT_TOKENS = 50257
EOT, SOT = 50257, 50258
FIRST_LANGUAGE = 50259  # 99 language tokens follow
TRANSLATE, TRANSCRIBE, SOT_LM, SOT_PREV, NO_CAPTIONS, NO_TIMESTAMPS = range(50358, 50364)
TIMESTAMP_BEGIN = 50364  # <|0.00|>, then one token per 0.02 s up to <|30.00|>
ENCODER_FRAMES = 1500  # 30 s at 20 ms
FRAME_SEC = 0.02
LOGIT = 40.0  # margin of the scripted next token over every other one
FINE, COARSE = 30.0, 60.0  # sharpness of the alignment queries on the fine and coarse circles
FINE_FRAMES = 150  # encoder frames per half turn of the fine circle (3 s); coarse: 30 s

TEXT = " gg wp"  # what every window of speech reads
WORDS = ((" gg", 0.0, 1.0), (" wp", 1.0, 2.0))  # word, start s, end s within a window
SEGMENT = (0.0, 2.0)  # s within each 30 s window


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character map (the alphabet of a byte-level BPE)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in keep:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


def _languages() -> list[str]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    codes = [code for code in _LANGUAGE_CODES if code not in ("en", "yue")]
    return ["en", *codes][:99]


def whisper_tokens() -> tuple[list[str], dict[str, int], list[str]]:
    """Every token string by id, the BPE vocabulary and its merges."""
    alphabet = list(_bytes_to_unicode().values())
    words = ["Ġg", "Ġgg", "Ġw", "Ġwp"]
    merges = ["Ġ g", "Ġg g", "Ġ w", "Ġw p"]
    text = alphabet + words
    text += [f"<|unused{i}|>" for i in range(TEXT_TOKENS - len(text))]
    special = ["<|endoftext|>", "<|startoftranscript|>"]
    special += [f"<|{code}|>" for code in _languages()]
    special += ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
                "<|nocaptions|>", "<|notimestamps|>"]  # fmt: skip
    special += [f"<|{i * FRAME_SEC:.2f}|>" for i in range(VOCAB - TEXT_TOKENS - len(special))]
    tokens = text + special
    assert len(tokens) == VOCAB and tokens[TIMESTAMP_BEGIN] == "<|0.00|>"
    return tokens, {token: i for i, token in enumerate(text)}, merges


def _tokenizer_json(tokens: list[str], vocab: dict[str, int], merges: list[str]) -> dict:
    added = [
        {"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i in range(TEXT_TOKENS, VOCAB)
    ]  # fmt: skip
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}  # fmt: skip
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": None,
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "vocab": vocab,
            "merges": merges,
        },  # fmt: skip
    }


def _layer_norm(spec, width: int) -> None:
    spec.gamma = np.ones(width, np.float32)
    spec.beta = np.zeros(width, np.float32)


def _linear(spec, rows: int, cols: int, weight: np.ndarray | None = None) -> None:
    spec.weight = np.zeros((rows, cols), np.float32) if weight is None else weight
    spec.bias = np.zeros(rows, np.float32)


def _silent_layer(layer, cross: bool) -> None:
    """A pre-norm layer whose every output projection is zero: it adds nothing to its input."""
    d = D_MODEL
    _layer_norm(layer.self_attention.layer_norm, d)
    _linear(layer.self_attention.linear[0], 3 * d, d)
    _linear(layer.self_attention.linear[1], d, d)
    _layer_norm(layer.ffn.layer_norm, d)
    _linear(layer.ffn.linear_0, 4 * d, d)
    _linear(layer.ffn.linear_1, d, 4 * d)
    if cross:
        _layer_norm(layer.attention.layer_norm, d)
        _linear(layer.attention.linear[0], d, d)
        _linear(layer.attention.linear[1], 2 * d, d)
        _linear(layer.attention.linear[2], d, d)


def _normalized(x: np.ndarray) -> np.ndarray:
    """What a LayerNorm with unit gain and zero bias makes of rows ``x`` (CTranslate2's eps)."""
    centred = x - x.mean(axis=-1, keepdims=True)
    return centred / np.sqrt((centred**2).mean(axis=-1, keepdims=True) + 1e-5)


def _angles(frame: np.ndarray | float) -> tuple:
    return np.pi * np.asarray(frame) / FINE_FRAMES, np.pi * np.asarray(frame) / ENCODER_FRAMES


def build_scripted_whisper(folder: Path) -> Path:
    """Write the scripted model into ``folder`` (created) and return it."""
    from ctranslate2.specs import whisper_spec

    d = D_MODEL
    tokens, vocab, merges = whisper_tokens()
    spec = whisper_spec.WhisperSpec(1, 1, 1, 1)

    # Encoder: zero convolutions, so frame j's output is LayerNorm(position j) = its angles.
    enc = spec.encoder
    enc.conv1.weight = np.zeros((d, 80, 3), np.float32)
    enc.conv1.bias = np.zeros(d, np.float32)
    enc.conv2.weight = np.zeros((d, d, 3), np.float32)
    enc.conv2.bias = np.zeros(d, np.float32)
    fine, coarse = _angles(np.arange(ENCODER_FRAMES))
    circle = np.stack([np.cos(fine), np.sin(fine), np.cos(coarse), np.sin(coarse)], axis=1)
    positions = np.zeros((ENCODER_FRAMES, d), np.float32)
    positions[:, :4], positions[:, 4:8] = circle, -circle  # zero mean, constant spread
    enc.position_encodings.encodings = positions
    _layer_norm(enc.layer_norm, d)
    _silent_layer(enc.layer[0], cross=False)
    scale = float(_normalized(positions[:1])[0, 0] / positions[0, 0])  # LayerNorm's gain

    # Decoder states: a token's embedding is +1/-1 on the two dimensions of its state.
    script = {  # state: (tokens in it, next token, the time its alignment query looks at, s)
        0: ([SOT], FIRST_LANGUAGE, None),
        1: ([TRANSCRIBE], TIMESTAMP_BEGIN, None),
        2: ([TIMESTAMP_BEGIN, NO_TIMESTAMPS], vocab["Ġgg"], 0.5),
        3: ([vocab["Ġgg"]], vocab["Ġwp"], 1.5),
        4: ([vocab["Ġwp"]], TIMESTAMP_BEGIN + round(SEGMENT[1] / FRAME_SEC), 2.5),
    }
    default = 5  # every other token: end of text
    assert 2 * (default + 1) <= d
    state_of = np.full(VOCAB, default)
    for state, (members, _, _) in script.items():
        state_of[members] = state
    embeddings = np.zeros((VOCAB, d), np.float32)
    embeddings[np.arange(VOCAB), 2 * state_of] = 1.0
    embeddings[np.arange(VOCAB), 2 * state_of + 1] = -1.0
    dec = spec.decoder
    dec.embeddings.weight = embeddings
    dec.position_encodings.encodings = np.zeros((448, d), np.float32)
    _layer_norm(dec.layer_norm, d)
    _silent_layer(dec.layer[0], cross=True)
    gain = float(
        _normalized(embeddings[:1])[0, 2 * state_of[0]]
    )  # LayerNorm of a state vector: ±gain
    projection = np.zeros((VOCAB, d), np.float32)
    for state, (_, following, _) in script.items():
        projection[following, 2 * state] = LOGIT / gain
    projection[EOT, 2 * default] = LOGIT / gain
    dec.projection.weight = projection
    dec.projection.bias = np.zeros(VOCAB, np.float32)

    # The alignment head: keys are the frames' angles, a state's query points at its time.
    cross = dec.layer[0].attention
    keys = np.zeros((2 * d, d), np.float32)
    keys[np.arange(4), np.arange(4)] = 1.0 / scale
    cross.linear[1].weight = keys  # keys (rows :d) then values (zero)
    queries = np.zeros((d, d), np.float32)
    root = np.sqrt(d)  # CTranslate2 scales queries by 1/sqrt(head width)
    for state, (_, _, seconds) in script.items():
        if seconds is None:
            continue  # a zero query: even attention
        fine_t, coarse_t = _angles(seconds / FRAME_SEC - 0.5)  # centre of a frame-wide band
        queries[:4, 2 * state] = root / gain * np.array(
            [FINE * np.cos(fine_t), FINE * np.sin(fine_t),
             COARSE * np.cos(coarse_t), COARSE * np.sin(coarse_t)]
        )  # fmt: skip
    cross.linear[0].weight = queries

    config = spec.config
    config.suppress_ids = []
    config.suppress_ids_begin = [220, EOT]
    config.lang_ids = list(range(FIRST_LANGUAGE, FIRST_LANGUAGE + 99))
    config.alignment_heads = [(0, 0)]
    # CTranslate2 4.8.5 calls a Whisper multilingual (language tokens, detection) when its
    # vocabulary maps the empty string to a token (observed: its constructor looks "" up and
    # compares with the unknown token), so one unused text slot is "" in the model's vocabulary.
    spec.register_vocabulary(["" if t == "<|unused0|>" else t for t in tokens])
    spec.validate()
    spec.optimize(quantization=None)
    folder.mkdir(parents=True, exist_ok=True)
    spec.save(str(folder))
    (folder / "tokenizer.json").write_text(json.dumps(_tokenizer_json(tokens, vocab, merges)))
    preprocessor = {"feature_size": 80, "sampling_rate": 16000, "hop_length": 160,
                    "chunk_length": 30, "n_fft": 400}  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder
