"""Tokenizer metadata for a GGUF model file: the ``tokenizer.*`` keys llama.cpp reads.

Two sources, first match wins:

1. the GGUF the base model came from (``ftf_source.json`` in the base folder): its ``tokenizer.*``
   keys are copied as they are, so the export tokenizes exactly like the file the user started from;
2. the trained Hugging Face tokenizer: byte-level BPE becomes llama.cpp's ``gpt2`` model (the
   pre-tokenizer name found like llama.cpp's converter does: a hash of how a fixed text tokenizes),
   SentencePiece becomes the ``llama`` model with its pieces' scores and types.

Either way the trained tokenizer's chat template is written, and its end-of-turn token becomes
``eos`` and ``eot``: a runtime that reads the file stops where the trained model stops.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

import gguf
from gguf import GGUFValueType as VT
from gguf import TokenType

# llama.cpp's converter hashes the token ids of this text to name the BPE pre-tokenizer
# (convert_hf_to_gguf.py, get_vocab_base_pre); a few of its known hashes:
CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ "
    "(multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 "
    "3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български "
    "```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure "
    "I'll make it, 'D you like some tea? We'Ve a'lL"
)
KNOWN_PRE = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
}
# llama.cpp (llama-vocab.cpp) also stops on any token spelled like one of these
LLAMA_CPP_EOG_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>",
    "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
)  # fmt: skip


@dataclass
class VocabMeta:
    """The tokenizer keys to write, and where they came from (said in the export result)."""

    fields: dict[str, tuple[Any, VT, VT | None]]  # key -> (value, type, array element type)
    origin: str
    eot_id: int
    notes: list[str] = field(default_factory=list)

    def write(self, writer: gguf.GGUFWriter) -> None:
        for key, (value, vtype, sub) in self.fields.items():
            writer.add_key_value(key, value, vtype, sub)


def tokenizer_metadata(tokenizer: Any, vocab_size: int, source_gguf: Path | None) -> VocabMeta:
    """The ``tokenizer.*`` keys for a model with ``vocab_size`` embedding rows.

    Raises:
        ValueError: the tokenizer is neither byte-level BPE nor SentencePiece.
    """
    eot = end_of_turn_id(tokenizer)
    notes: list[str] = []
    fields = None
    if source_gguf is not None:
        fields, why = _from_gguf(source_gguf, tokenizer, vocab_size, eot)
        origin = f"copied from {source_gguf}" if fields else ""
        if fields is None:
            notes.append(f"source GGUF tokenizer not used: {why}")
    if fields is None:
        fields, origin = _from_hf(tokenizer, vocab_size)
    T = gguf.Keys.Tokenizer
    fields[T.EOS_ID] = (eot, VT.UINT32, None)
    fields[T.EOT_ID] = (eot, VT.UINT32, None)
    if tokenizer.pad_token_id is not None:
        fields[T.PAD_ID] = (int(tokenizer.pad_token_id), VT.UINT32, None)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        fields[T.CHAT_TEMPLATE] = (template, VT.STRING, None)
    else:
        fields.pop(T.CHAT_TEMPLATE, None)
        notes.append("the trained tokenizer has no chat template; none written")
    return VocabMeta(fields, origin, eot, notes)


def end_of_turn_id(tokenizer: Any) -> int:
    """The token the chat template closes an assistant turn with (else the eos token)."""
    from finetuneflow.models.chat import end_of_turn_tokens

    stops = end_of_turn_tokens(tokenizer)
    if getattr(tokenizer, "chat_template", None):
        chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "ANSWER"}]
        text = str(tokenizer.apply_chat_template(chat, tokenize=False))
        after = text[text.rfind("ANSWER") + len("ANSWER") :]
        found = [(after.find(tok), tok) for tok in stops if tok in after]
        if found:
            return int(stops[min(found)[1]])
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token and its template no end-of-turn marker")
    return int(tokenizer.eos_token_id)


def stop_ids_in_file(reader: gguf.GGUFReader) -> set[int]:
    """The ids llama.cpp ends a turn on, read back from a written file: eos/eot/eom, and every token
    spelled like an end-of-generation marker (llama.cpp's own rule)."""
    T = gguf.Keys.Tokenizer
    ids = {int(reader.fields[k].contents()) for k in (T.EOS_ID, T.EOT_ID, T.EOM_ID) if k in reader.fields}
    tokens = reader.fields[T.LIST]
    wanted = {t.encode() for t in LLAMA_CPP_EOG_TEXTS}
    ids |= {i for i, part in enumerate(tokens.data) if bytes(tokens.parts[part]) in wanted}
    return ids


def _from_gguf(
    path: Path, tokenizer: Any, vocab_size: int, eot: int
) -> tuple[dict[str, tuple[Any, VT, VT | None]] | None, str]:
    reader = gguf.GGUFReader(path)
    fields: dict[str, tuple[Any, VT, VT | None]] = {}
    for key, f in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        if f.types[0] == VT.ARRAY and f.types[-1] == VT.STRING:
            value: Any = [bytes(f.parts[i]) for i in f.data]  # raw bytes: tokens need not be UTF-8
        else:
            value = f.contents()
        fields[key] = (value, f.types[0], f.types[-1] if f.types[0] == VT.ARRAY else None)
    tokens = fields.get(gguf.Keys.Tokenizer.LIST, ([], VT.ARRAY, None))[0]
    if len(tokens) != vocab_size:
        return None, f"it has {len(tokens)} tokens, the model {vocab_size} embedding rows"
    want = tokenizer.convert_ids_to_tokens(eot)
    if tokens[eot].decode("utf-8", "replace") != want:
        return None, f"its token {eot} is not the trained end-of-turn {want!r}"
    return fields, ""


def _from_hf(tokenizer: Any, vocab_size: int) -> tuple[dict[str, tuple[Any, VT, VT | None]], str]:
    T = gguf.Keys.Tokenizer
    spec = json.loads(tokenizer.backend_tokenizer.to_str()) if tokenizer.is_fast else {}
    model = spec.get("model", {})
    vocab_file = getattr(tokenizer, "vocab_file", None)
    if vocab_file and str(vocab_file).endswith(".model") and Path(vocab_file).is_file():
        tokens, scores, types = _sentencepiece(Path(vocab_file), tokenizer, vocab_size)
        kind = "SentencePiece tokenizer.model"
    elif model.get("type") == "Unigram" or (model.get("type") == "BPE" and model.get("byte_fallback")):
        tokens, scores, types = _sentencepiece_json(model, tokenizer, vocab_size)
        kind = f"SentencePiece-style {model['type']} tokenizer.json"
    elif model.get("type") == "BPE":
        bpe_tokens, bpe_types = _bpe_tokens(tokenizer, vocab_size)
        pre = bpe_pre_name(tokenizer, spec)
        fields = {
            T.MODEL: ("gpt2", VT.STRING, None),
            T.PRE: (pre, VT.STRING, None),
            T.LIST: (bpe_tokens, VT.ARRAY, VT.STRING),
            T.TOKEN_TYPE: (bpe_types, VT.ARRAY, VT.INT32),
            T.MERGES: (_merges(model), VT.ARRAY, VT.STRING),
        }
        return fields | _special(tokenizer), f"built from the byte-level BPE tokenizer (pre {pre!r})"
    else:
        raise ValueError(f"cannot describe a {model.get('type', 'slow')} tokenizer in GGUF; "
                         "supported: byte-level BPE and SentencePiece")  # fmt: skip
    fields = {
        T.MODEL: ("llama", VT.STRING, None),
        T.PRE: ("default", VT.STRING, None),
        T.LIST: (tokens, VT.ARRAY, VT.STRING),
        T.SCORES: (scores, VT.ARRAY, VT.FLOAT32),
        T.TOKEN_TYPE: (types, VT.ARRAY, VT.INT32),
    }
    return fields | _special(tokenizer), f"built from the {kind}"


def bpe_pre_name(tokenizer: Any, spec: dict[str, Any]) -> str:
    """llama.cpp's name for this BPE pre-tokenizer: by the converter's hash, else GPT-2's plain
    byte-level split, else 'default'."""
    ids = tokenizer.encode(CHKTXT)
    name = KNOWN_PRE.get(sha256(str(ids).encode()).hexdigest())
    if name:
        return name
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    return "default"


def _bpe_tokens(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    # as convert_hf_to_gguf.py's get_vocab_base: holes become [PAD<i>], added tokens CONTROL
    # (special) or USER_DEFINED
    reverse = {i: tok for tok, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.USER_DEFINED)
        elif i in added:
            special = added[i].special or _looks_special(reverse[i])
            tokens.append(reverse[i] if special else reverse[i].replace("\u2581", " "))
            types.append(TokenType.CONTROL if special else TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(TokenType.NORMAL)
    return tokens, [int(t) for t in types]


def _looks_special(token: str) -> bool:
    return bool(re.fullmatch(r"<\|[^|]+\|>|<[a-z_]+>|\[[A-Z_]+\]", token))


def _merges(model: dict[str, Any]) -> list[str]:
    merges = model.get("merges") or []
    if merges and isinstance(merges[0], list):  # transformers >= 4.45: pairs; a space is U+0120
        return [" ".join(part.replace(" ", "\u0120") for part in pair) for pair in merges]
    return list(merges)


def _sentencepiece(path: Path, tokenizer: Any, vocab_size: int) -> tuple[list[bytes], list[float], list[int]]:
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(path))
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores, types = [-10000.0] * vocab_size, [int(TokenType.UNUSED)] * vocab_size
    for i in range(min(sp.vocab_size(), vocab_size)):
        tokens[i], scores[i] = sp.IdToPiece(i).encode(), sp.GetScore(i)
        types[i] = int(
            TokenType.UNKNOWN if sp.IsUnknown(i) else TokenType.CONTROL if sp.IsControl(i)
            else TokenType.UNUSED if sp.IsUnused(i) else TokenType.BYTE if sp.IsByte(i) else TokenType.NORMAL
        )  # fmt: skip
    _add_added_tokens(tokenizer, tokens, scores, types)
    return tokens, scores, types


def _sentencepiece_json(
    model: dict[str, Any], tokenizer: Any, vocab_size: int
) -> tuple[list[bytes], list[float], list[int]]:
    tokens = [f"[PAD{i}]".encode() for i in range(vocab_size)]
    scores, types = [-10000.0] * vocab_size, [int(TokenType.UNUSED)] * vocab_size
    if model["type"] == "Unigram":
        pieces = [(p, float(s)) for p, s in model["vocab"]]
    else:  # SentencePiece BPE: a piece's score is minus its rank, as sentencepiece stores it
        pieces = [(p, -float(i)) for p, i in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    unk = model.get("unk_id")
    for i, (piece, score) in enumerate(pieces[:vocab_size]):
        tokens[i], scores[i] = piece.encode(), score
        byte = re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece)
        types[i] = int(TokenType.UNKNOWN if i == unk else TokenType.BYTE if byte else TokenType.NORMAL)
    _add_added_tokens(tokenizer, tokens, scores, types)
    return tokens, scores, types


def _add_added_tokens(tokenizer: Any, tokens: list[bytes], scores: list[float], types: list[int]) -> None:
    for i, added in tokenizer.added_tokens_decoder.items():
        if i >= len(tokens):
            continue
        special = added.special or _looks_special(added.content)
        text = added.content if special else added.content.replace("\u2581", " ")
        tokens[i], scores[i] = text.encode(), -1000.0
        types[i] = int(TokenType.CONTROL if special else TokenType.USER_DEFINED)


def _special(tokenizer: Any) -> dict[str, tuple[Any, VT, VT | None]]:
    T = gguf.Keys.Tokenizer
    out: dict[str, tuple[Any, VT, VT | None]] = {}
    for key, tid in ((T.BOS_ID, tokenizer.bos_token_id), (T.UNK_ID, tokenizer.unk_token_id)):
        if tid is not None:
            out[key] = (int(tid), VT.UINT32, None)
    # add_bos only when the tokenizer itself adds it (checked on a real encode, not a config flag)
    probe = tokenizer("a")["input_ids"]
    bos = tokenizer.bos_token_id
    out[T.ADD_BOS] = (bool(bos is not None and probe and probe[0] == bos), VT.BOOL, None)
    eos = tokenizer.eos_token_id
    out[T.ADD_EOS] = (bool(eos is not None and probe and probe[-1] == eos), VT.BOOL, None)
    return out
