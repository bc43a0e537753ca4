"""Chat templates for Ollama: the tokenizer's Jinja template translated into Ollama's Go template,
and a small Go-template evaluator that proves the translation.

Translation never guesses. The family is recognised by its markers (ChatML, Llama 3, Gemma,
Phi-3, Zephyr, [INST] for Mistral / Llama 2); anything else is refused. The family fixes how a turn
is wrapped; what varies inside a family (a default system prompt, Llama 3.1's date preamble, a
system prompt folded into the first user turn, Llama 2's ``<s>`` before every later turn) is read
off the Jinja template by rendering marker conversations with ``apply_chat_template``. Then the Go
template is rendered the way Ollama renders it (``.System`` = the last system message,
``.Messages`` = the conversation) for several conversations and must equal the Jinja rendering
byte for byte, the leading BOS aside (the runtime adds it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from finetuneflow.errors import OllamaTemplateError, UnsupportedTemplate

U1, A1, U2, S = "FTFUSER1", "FTFASSISTANT1", "FTFUSER2", "FTFSYSTEM"
CHECKS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hello! What does error E4 mean?"}],
    [{"role": "system", "content": "You are a support bot."}, {"role": "user", "content": "Hi there"}],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "My printer is stuck."},
    ],  # fmt: skip
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is E4?"},
        {"role": "assistant", "content": "The cover is open."},
        {"role": "user", "content": "Thanks!"},
    ],  # fmt: skip
]


@dataclass
class Spec:
    """How one family wraps turns: message = pre[role] + content + suf[role]; then ``gen``."""

    family: str
    pre: dict[str, str]
    suf: dict[str, str]
    gen: str
    first_user_pre: str | None = None  # the first user turn's prefix when it differs ([INST])
    system: str = "turn"  # turn | default | preamble | fold | none
    system_text: str = ""  # the default system prompt (default) or the preamble (preamble)
    fold: tuple[str, str] = ("", "")  # around the system prompt inside the first user turn


def _wrap(pre: str, suf: str, gen: str, roles: dict[str, str] | None = None) -> tuple[dict[str, str], ...]:
    names = roles or {}
    p = {r: pre.format(role=names.get(r, r)) for r in ("system", "user", "assistant")}
    return p, {r: suf for r in p}, {"gen": gen.format(role=names.get("assistant", "assistant"))}


def detect_family(template: str) -> str:
    """The family of a Jinja chat template, from its markers.

    Raises:
        OllamaTemplateError: no known family's markers.
    """
    for family, markers in (("chatml", ["<|im_start|>"]), ("llama3", ["<|start_header_id|>"]),
                            ("gemma", ["<start_of_turn>"]), ("phi3", ["<|user|>", "<|end|>"]),
                            ("zephyr", ["<|user|>"]), ("inst", ["[INST]"])):  # fmt: skip
        if all(m in template for m in markers):
            return family
    raise OllamaTemplateError(
        "the tokenizer's chat template is not one FineTuneFlow can translate for Ollama (known: ChatML, "
        "Llama 3, Mistral/Llama 2 [INST], Zephyr, Gemma, Phi-3); write the Modelfile's TEMPLATE by hand"
    )


def render_hf(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """``apply_chat_template`` text with the generation prompt, without a leading BOS that the
    template emits as ``bos_token`` (the runtime adds that one itself). A template that spells its
    turn marker literally keeps it, even when the marker is also the BOS (SmolLM2: <|im_start|>)."""
    text = str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    bos = getattr(tokenizer, "bos_token", None)
    emits_bos = "bos_token" in str(tokenizer.chat_template or "")
    return text[len(bos) :] if bos and emits_bos and text.startswith(bos) else text


def _try(tokenizer: Any, messages: list[dict[str, str]]) -> str | None:
    try:
        return render_hf(tokenizer, messages)
    except Exception:  # the template raises for what it does not allow (Gemma: system role)
        return None


def family_spec(tokenizer: Any) -> Spec:
    """The family's turn wrapping with this template's variant read off by rendering.

    Raises:
        OllamaTemplateError: unknown family, or a variant the family's pattern does not explain.
    """
    family = detect_family(str(tokenizer.chat_template or ""))
    eos = str(tokenizer.eos_token or "</s>")
    wraps = {
        "chatml": _wrap("<|im_start|>{role}\n", "<|im_end|>\n", "<|im_start|>{role}\n"),
        "llama3": _wrap(
            "<|start_header_id|>{role}<|end_header_id|>\n\n",
            "<|eot_id|>",
            "<|start_header_id|>{role}<|end_header_id|>\n\n",
        ),  # fmt: skip
        "gemma": _wrap(
            "<start_of_turn>{role}\n", "<end_of_turn>\n", "<start_of_turn>{role}\n", {"assistant": "model"}
        ),  # fmt: skip
        "phi3": _wrap("<|{role}|>\n", "<|end|>\n", "<|{role}|>\n"),
        "zephyr": _wrap("<|{role}|>\n", eos + "\n", "<|{role}|>\n"),
    }
    if family == "inst":
        spec = _inst_spec(tokenizer)
    else:
        pre, suf, gen = wraps[family]
        spec = Spec(family, pre, suf, gen["gen"])
    _system_variant(tokenizer, spec)
    return spec


def _inst_spec(tokenizer: Any) -> Spec:
    """[INST] templates: user and assistant glue read off one rendered two-turn conversation."""
    text = _try(tokenizer, [{"role": "user", "content": U1}, {"role": "assistant", "content": A1},
                            {"role": "user", "content": U2}])  # fmt: skip
    if text is None or not all(m in text for m in (U1, A1, U2)):
        raise OllamaTemplateError(
            "the [INST] chat template does not render a user/assistant/user conversation"
        )
    first, rest = text.split(U1, 1)
    between, rest = rest.split(A1, 1)
    after_assistant, user_suf = rest.split(U2, 1)
    bos = str(tokenizer.bos_token or "")
    user_pre = next((p for p in (bos + first, first) if p and after_assistant.endswith(p)), None)
    if user_pre is None or not between.startswith(user_suf):
        raise OllamaTemplateError(f"the [INST] template's turns do not follow one pattern: {text!r}")
    pre = {"user": user_pre, "assistant": between[len(user_suf) :]}
    suf = {"user": user_suf, "assistant": after_assistant[: -len(user_pre)]}
    return Spec("inst", pre, suf, "", first_user_pre=first if first != user_pre else None)


def _system_variant(tokenizer: Any, spec: Spec) -> None:
    """How system prompts render: their own turn, a default when absent, a preamble, folded into the
    first user turn, or not at all (``system = none``)."""
    turn = spec.pre["user"] if spec.first_user_pre is None else spec.first_user_pre
    user_block = turn + U1 + spec.suf["user"] + spec.gen
    plain, with_system = (
        _try(tokenizer, [{"role": "user", "content": U1}]),
        _try(tokenizer, [{"role": "system", "content": S}, {"role": "user", "content": U1}]),
    )
    if plain is None or not plain.endswith(user_block):
        raise OllamaTemplateError(f"the {spec.family} template renders a user turn unexpectedly: {plain!r}")
    head = plain[: -len(user_block)]
    sys_pre, sys_suf = spec.pre.get("system", ""), spec.suf.get("system", "")
    if with_system is None:
        spec.system = "none"
    elif with_system.endswith(user_block) and with_system[: -len(user_block)] == sys_pre + S + sys_suf:
        spec.system = "turn"
        if head:
            inner = head.removeprefix(sys_pre).removesuffix(sys_suf)
            if sys_pre + inner + sys_suf != head:
                raise OllamaTemplateError(f"the {spec.family} template adds an unknown prefix: {head!r}")
            spec.system, spec.system_text = "default", inner
    elif with_system.endswith(user_block) and head.startswith(sys_pre) and head.endswith(sys_suf):
        preamble = head[len(sys_pre) : len(head) - len(sys_suf)]
        if with_system[: -len(user_block)] != sys_pre + preamble + S + sys_suf:
            raise OllamaTemplateError(
                f"the {spec.family} template's system turn is not understood: {with_system!r}"
            )
        spec.system, spec.system_text = "preamble", preamble
    else:
        before, after = with_system.split(S, 1) if S in with_system else ("", "")
        if not before.startswith(head + turn) or U1 not in after:
            raise OllamaTemplateError(
                f"the {spec.family} template's system prompt is not understood: {with_system!r}"
            )
        fold_after, tail = after.split(U1, 1)
        if tail != spec.suf["user"] + spec.gen:
            raise OllamaTemplateError(
                f"the {spec.family} template's system prompt is not understood: {with_system!r}"
            )
        spec.system, spec.fold = "fold", (before[len(head + turn) :], fold_after)
        spec.system_text = ""
        if head:
            raise OllamaTemplateError(f"the {spec.family} template adds an unknown prefix: {head!r}")


def go_template(spec: Spec) -> str:
    """The Ollama (Go text/template) TEMPLATE for ``spec``."""
    first = spec.first_user_pre is not None or spec.system == "fold"
    pre, suf = spec.pre, spec.suf
    parts = [_a("$first := true")] if first else []
    if spec.system == "default":
        parts += [_a("if not .System"), _t(pre["system"] + spec.system_text + suf["system"]), _a("end")]
    elif spec.system == "preamble":
        parts += [_t(pre["system"] + spec.system_text), _a(".System"), _t(suf["system"])]
    parts += [_a("range .Messages"), _a('if eq .Role "user"')]
    if first:
        parts += [_a("if $first"), _t(spec.first_user_pre or pre["user"])]
        if spec.system == "fold":
            parts += [_a("if $.System"), _t(spec.fold[0]), _a("$.System"), _t(spec.fold[1]), _a("end")]
        parts += [_a("else"), _t(pre["user"]), _a("end")]
    else:
        parts.append(_t(pre["user"]))
    parts += [_a(".Content"), _t(suf["user"])] + ([_a("$first = false")] if first else [])
    parts += [_a('else if eq .Role "assistant"'), _t(pre["assistant"]), _a(".Content"), _t(suf["assistant"])]
    if spec.system in ("turn", "default"):
        parts += [_a('else if eq .Role "system"'), _t(pre["system"]), _a(".Content"), _t(suf["system"])]
    return _layout([*parts, _a("end"), _a("end"), _t(spec.gen)])


def _a(action: str) -> tuple[str, str]:
    return ("act", action)


def _t(text: str) -> tuple[str, str]:
    if "{{" in text:
        raise OllamaTemplateError(f"template text {text!r} contains '{{{{'")
    return ("text", text)


def _layout(parts: list[tuple[str, str]]) -> str:
    """Join parts, one action per line where that is free: ``-}}`` eats the layout newline, so
    it is used only before text that does not start with whitespace (or before another action)."""
    out = []
    for i, (kind, s) in enumerate(parts):
        if kind == "text":
            out.append(s)
            continue
        nxt = parts[i + 1] if i + 1 < len(parts) else None
        control = not s.startswith((".", "$.")) or s.startswith("$first")  # not an output action
        free = control and nxt is not None and (nxt[0] == "act" or (nxt[1] and not nxt[1][0].isspace()))
        out.append("{{ " + s + (" -}}\n" if free else " }}"))
    return "".join(p for p in out if p)


def ollama_values(messages: list[dict[str, str]]) -> dict[str, Any]:
    """What Ollama hands a template that uses .Messages (server/template: collate): consecutive
    turns of one role merged, ``.System`` the last system message."""
    merged: list[dict[str, str]] = []
    for m in messages:
        if merged and merged[-1]["Role"] == m["role"]:
            merged[-1]["Content"] += "\n\n" + m["content"]
        else:
            merged.append({"Role": m["role"], "Content": m["content"]})
    system = next((m["Content"] for m in reversed(merged) if m["Role"] == "system"), "")
    return {"System": system, "Messages": merged, "Tools": None, "Response": "", "Prompt": "", "Think": False}


def check_template(template: str, tokenizer: Any) -> dict[str, Any]:
    """Render ``template`` like Ollama for each CHECKS conversation and compare with the Jinja
    rendering; returns {"conversations", "skipped", "mismatches": [...]} (empty = proven)."""
    compared, skipped, mismatches = 0, 0, []
    for messages in CHECKS:
        want = _try(tokenizer, messages)
        if want is None:  # the model's own template refuses this conversation (Gemma: system)
            skipped += 1
            continue
        got = render_go(template, ollama_values(messages))
        compared += 1
        if got != want:
            at = next(
                (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                min(len(got), len(want)),
            )
            mismatches.append(f"{[m['role'] for m in messages]}: differs at char {at}: "
                              f"Ollama {got[at:at + 40]!r} vs HF {want[at:at + 40]!r}")  # fmt: skip
    return {"conversations": compared, "skipped": skipped, "mismatches": mismatches}


# ---------------------------------------------------------------- a Go text/template subset

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(
    r'\s*(\(|\)|"(?:\\.|[^"\\])*"|`[^`]*`|:=|=|,|\$[\w]*(?:\.\w+)*|\.(?:\w+(?:\.\w+)*)?|-?\d+|\w+|\|)'
)


@dataclass
class _Node:
    kind: str  # text | out | if | range | set | decl
    value: Any = None  # text, expression tokens, or (names, tokens) for range/set
    branches: list[tuple[list[str], list[_Node]]] = field(default_factory=list)
    other: list[_Node] = field(default_factory=list)


def render_go(template: str, data: dict[str, Any]) -> str:
    """Execute ``template`` on ``data`` (the subset this module emits plus ``len``/``slice``/
    ``index``/``and``/``or``/``not``/comparisons).

    Raises:
        UnsupportedTemplate: pipes, ``with``, ``define`` and other constructs beyond the subset.
    """
    nodes, rest = _parse(_segments(template), 0, top=True)
    out: list[str] = []
    _run(nodes, data, data, [{"$": data}], out)
    return "".join(out)


def _segments(template: str) -> list[tuple[str, str]]:
    segs: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(template):
        txt = template[pos : m.start()]
        if m.group(1):
            txt = txt.rstrip()
        segs.append(("text", txt))
        body = m.group(2).strip()
        if not body.startswith("/*"):
            segs.append(("act", body))
        pos = m.end()
        if m.group(3):
            nxt = template[pos:]
            pos += len(nxt) - len(nxt.lstrip())
    segs.append(("text", template[pos:]))
    return segs


def _tokens(s: str) -> list[str]:
    toks, pos = [], 0
    while pos < len(s.rstrip()):
        m = _TOKEN.match(s, pos)
        if m is None:
            raise UnsupportedTemplate(f"cannot read template action {s!r}")
        toks.append(m.group(1))
        pos = m.end()
    if "|" in toks:
        raise UnsupportedTemplate(f"pipelines are beyond the checker: {s!r}")
    return toks


def _parse(segs: list[tuple[str, str]], i: int, top: bool = False) -> tuple[list[_Node], int]:
    """Nodes until a closing ``end``/``else`` (returned index points at it)."""
    nodes: list[_Node] = []
    while i < len(segs):
        kind, s = segs[i]
        if kind == "text":
            nodes.append(_Node("text", s)) if s else None
            i += 1
            continue
        word = s.split(None, 1)[0] if s else ""
        if word in ("end", "else"):
            if top:
                raise UnsupportedTemplate(f"unexpected {{{{ {s} }}}}")
            return nodes, i
        if word in ("if", "range"):
            node = _Node(word)
            cond = s[len(word) :]
            while True:
                body, i = _parse(segs, i + 1)
                node.branches.append((_tokens(cond), body))
                closer = segs[i][1] if i < len(segs) else ""
                if closer.startswith("else if") and word == "if":
                    cond = closer[len("else if") :]
                    continue
                if closer == "else":
                    node.other, i = _parse(segs, i + 1)
                    closer = segs[i][1] if i < len(segs) else ""
                if closer != "end":
                    raise UnsupportedTemplate(f"unclosed {{{{ {word} }}}}")
                break
            nodes.append(node)
            i += 1
        elif word in ("with", "define", "template", "block", "break", "continue"):
            raise UnsupportedTemplate(f"{{{{ {word} }}}} is beyond the checker")
        else:
            toks = _tokens(s)
            if len(toks) > 2 and toks[0].startswith("$") and toks[1] in (":=", "="):
                nodes.append(_Node("decl" if toks[1] == ":=" else "set", (toks[0], toks[2:])))
            else:
                nodes.append(_Node("out", toks))
            i += 1
    if not top:
        raise UnsupportedTemplate("template ends inside a block")
    return nodes, i


def _truth(v: Any) -> bool:
    return not (v is None or v is False or v == 0 or v == "" or (isinstance(v, (list, dict)) and not v))


def _lookup(scopes: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for scope in reversed(scopes):
        if name in scope:
            return scope
    raise UnsupportedTemplate(f"undefined variable {name}")


def _run(nodes: list[_Node], dot: Any, root: Any, scopes: list[dict[str, Any]], out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.value)
        elif node.kind == "out":
            v = _eval(node.value, dot, scopes)
            out.append("<no value>" if v is None else str(v).lower() if isinstance(v, bool) else str(v))
        elif node.kind in ("decl", "set"):
            name, toks = node.value
            target = scopes[-1] if node.kind == "decl" else _lookup(scopes, name)
            target[name] = _eval(toks, dot, scopes)
        elif node.kind == "if":
            for cond, body in node.branches:
                if _truth(_eval(cond, dot, scopes)):
                    _run(body, dot, root, [*scopes, {}], out)
                    break
            else:
                _run(node.other, dot, root, [*scopes, {}], out)
        else:
            _range(node, dot, root, scopes, out)


def _range(node: _Node, dot: Any, root: Any, scopes: list[dict[str, Any]], out: list[str]) -> None:
    toks, body = node.branches[0]
    names: list[str] = []
    if ":=" in toks:
        names = [t for t in toks[: toks.index(":=")] if t != ","]
        toks = toks[toks.index(":=") + 1 :]
    items = _eval(toks, dot, scopes) or []
    pairs = list(items.items()) if isinstance(items, dict) else list(enumerate(items))
    for key, item in pairs:
        scope = dict(zip(names, [item] if len(names) == 1 else [key, item], strict=False))
        _run(body, item, root, [*scopes, scope], out)
    if not pairs:
        _run(node.other, dot, root, [*scopes, {}], out)


def _eval(toks: list[str], dot: Any, scopes: list[dict[str, Any]]) -> Any:
    args, i = [], 0
    while i < len(toks):
        if toks[i] == "(":
            depth, j = 1, i + 1
            while depth:
                depth += {"(": 1, ")": -1}.get(toks[j], 0)
                j += 1
            args.append(("v", _eval(toks[i + 1 : j - 1], dot, scopes)))
            i = j
            continue
        args.append(("v", _operand(toks[i], dot, scopes)) if not re.fullmatch(r"[A-Za-z_]\w*", toks[i])
                    or toks[i] in ("true", "false", "nil") else ("f", toks[i]))  # fmt: skip
        i += 1
    if args and args[0][0] == "f":
        return _call(args[0][1], [v for _, v in args[1:]])
    if len(args) != 1:
        raise UnsupportedTemplate(f"cannot evaluate {' '.join(toks)!r}")
    return args[0][1]


def _operand(tok: str, dot: Any, scopes: list[dict[str, Any]]) -> Any:
    if tok in ("true", "false", "nil"):
        return {"true": True, "false": False, "nil": None}[tok]
    if tok[0] in '"`':
        return tok[1:-1].encode().decode("unicode_escape") if tok[0] == '"' else tok[1:-1]
    if re.fullmatch(r"-?\d+", tok):
        return int(tok)
    head, *path = tok.split(".")
    value = dot if head == "" else _lookup(scopes, head)[head]
    for part in (p for p in path if p):
        value = value.get(part) if isinstance(value, dict) else getattr(value, part, None)
    return value


def _call(name: str, a: list[Any]) -> Any:
    funcs: dict[str, Any] = {
        "not": lambda x: not _truth(x),
        "and": lambda *xs: next((x for x in xs if not _truth(x)), xs[-1]),
        "or": lambda *xs: next((x for x in xs if _truth(x)), xs[-1]),
        "eq": lambda x, *ys: any(x == y for y in ys),
        "ne": lambda x, y: x != y,
        "lt": lambda x, y: x < y, "le": lambda x, y: x <= y,
        "gt": lambda x, y: x > y, "ge": lambda x, y: x >= y,
        "len": lambda x: len(x or []),
        "index": lambda x, *ks: _index(x, ks),
        "slice": lambda x, *ix: x[ix[0] : ix[1]] if len(ix) > 1 else x[ix[0] :] if ix else x,
    }  # fmt: skip
    if name not in funcs:
        raise UnsupportedTemplate(f"function {name!r} is beyond the checker")
    return funcs[name](*a)


def _index(x: Any, keys: tuple[Any, ...]) -> Any:
    for k in keys:
        x = x[k]
    return x
