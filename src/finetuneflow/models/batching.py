"""Continuous batching: many answers decoded together, new ones joining between decode steps.

:class:`DecodeBatch` holds the running rows of one model: each row's KV cache (left-padded to a
common length), attention mask and next position. :meth:`DecodeBatch.admit` prefills new prompts as a
left-padded batch of their own and merges their caches into the running ones; :meth:`DecodeBatch.step`
feeds every row its last token and picks the next. A row leaves the batch as soon as it ends, so a
short answer never waits for a long one, and a new request never waits for the batch to drain.

Greedy rows pick the argmax, as ``model.generate`` does, so a row alone gives the same tokens as
``models.generate.generate_reply``. Sampled rows draw from their own ``torch.Generator``: a seeded
answer repeats whatever else shares the batch.

Every layer's cache keeps all of its keys, sliding-window layers (Gemma 3, Mistral) included: a
cache built from the model's config would keep only the window's last keys on those layers, and
rows cut to different lengths cannot be merged, trimmed and re-wrapped as one batch. The window is
the attention mask's work (transformers builds it from the config on every call), so the answers
are the same; the cost is the full cache's memory on those layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    """One answer being generated."""

    prompt_ids: list[int]
    max_new_tokens: int
    stop_ids: frozenset[int]  # end-of-turn tokens: the answer ends before them
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int | None = None
    tokens: list[int] = field(default_factory=list)  # generated so far (no end-of-turn token)
    finish: str | None = None  # "stop" (end-of-turn) or "length"; None while running
    generator: Any = None  # torch.Generator of a sampled row

    def take(self, token: int) -> None:
        """Record the picked ``token``: the row ends on an end-of-turn token or at its length limit."""
        if token in self.stop_ids:
            self.finish = "stop"
            return
        self.tokens.append(token)
        if len(self.tokens) >= self.max_new_tokens:
            self.finish = "length"


def pick(logits: Any, rows: Sequence[Row]) -> list[int]:
    """The next token of each row from its (vocab,) logits: argmax when greedy, else a draw after
    temperature and top-p, from the row's own generator."""
    import torch

    out = logits.argmax(dim=-1).tolist()  # (batch,)
    for i, row in enumerate(rows):
        if row.temperature == 0:
            continue
        if row.generator is None:
            row.generator = torch.Generator(device=logits.device)
            if row.seed is None:
                row.generator.seed()  # a fresh random seed for this row alone
            else:
                row.generator.manual_seed(row.seed)
        probs = torch.softmax(logits[i].float() / row.temperature, dim=-1)
        if row.top_p < 1:
            ordered, order = probs.sort(descending=True)
            # keep the smallest prefix whose mass reaches top_p (the first token always stays)
            keep = ordered.cumsum(0) - ordered < row.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
        out[i] = int(torch.multinomial(probs, 1, generator=row.generator).item())
    return [int(t) for t in out]


class DecodeBatch:
    """The running rows of one model and their caches (see the module docstring)."""

    def __init__(self, model: Any, pad_id: int) -> None:
        self.model = model
        self.pad_id = pad_id
        self.rows: list[Row] = []
        self.pending: list[int] = []  # each row's last picked token, not yet fed to the model
        self.keys: list[Any] = []  # per layer: (batch, kv_heads, cached, head_dim)
        self.values: list[Any] = []
        self.mask: Any = None  # (batch, cached) 1 = a real token, 0 = left padding
        self.positions: Any = None  # (batch,) the position of each row's pending token

    def __len__(self) -> int:
        return len(self.rows)

    def admit(self, rows: Sequence[Row]) -> None:
        """Prefill ``rows`` together and add them to the batch; each gets its first token.

        All or nothing: if it raises (the prefill ran out of memory, a row's sampling failed), the
        batch is as it was and the rows hold no token, so its running rows decode on unharmed.
        """
        try:
            self._admit(rows)
        except BaseException:
            for row in rows:  # a retried row must draw from its seed again, not from a used generator
                row.generator = None
            raise

    def _admit(self, rows: Sequence[Row]) -> None:
        import torch
        from transformers import DynamicCache

        if not rows:
            return
        width = max(len(r.prompt_ids) for r in rows)
        device = self.model.device
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long, device=device)
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        for i, row in enumerate(rows):
            ids[i, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids, device=device)
            mask[i, width - len(row.prompt_ids) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (new, width): 0.. for each prompt's tokens
        with torch.no_grad():
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                cache=DynamicCache(),  # no config: full layers throughout (module docstring)
                use_cache=True,
                logits_to_keep=1,
            )
        keys, values = _tensors(out.cache)
        tokens = pick(out.logits[:, -1, :], rows)  # before any change: a failed draw leaves the batch be
        self._merge(keys, values, mask, mask.sum(-1))
        self.rows += rows
        self._take(rows, tokens)

    def step(self) -> None:
        """Feed every row its pending token and pick the next one."""
        import torch
        from transformers import DynamicCache

        device = self.model.device
        ids = torch.tensor(self.pending, dtype=torch.long, device=device)[:, None]  # (batch, 1)
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        cache = DynamicCache(ddp_cache_data=list(zip(self.keys, self.values, strict=True)))
        with torch.no_grad():
            out = self.model(
                input_ids=ids,
                attention_mask=self.mask,
                position_ids=self.positions[:, None],
                cache=cache,
                use_cache=True,
            )
        self.keys, self.values = _tensors(out.cache)
        self.positions = self.positions + 1
        self.pending = []
        self._take(self.rows, pick(out.logits[:, -1, :], self.rows))

    def _take(self, rows: Sequence[Row], tokens: list[int]) -> None:
        for row, token in zip(rows, tokens, strict=True):
            row.take(token)
            self.pending.append(token)

    def drop_finished(self) -> list[Row]:
        """Remove and return the rows that have ended (or were cancelled: ``finish`` set)."""
        done = [r for r in self.rows if r.finish is not None]
        if not done:
            return []
        keep = [i for i, r in enumerate(self.rows) if r.finish is None]
        self.rows = [self.rows[i] for i in keep]
        self.pending = [self.pending[i] for i in keep]
        if not keep:
            self.keys, self.values, self.mask, self.positions = [], [], None, None
            return done
        import torch

        index = torch.tensor(keep, device=self.mask.device)
        self.mask = self.mask[index]
        # columns no remaining row attends to (padding left of every row): trim them
        first = int(self.mask.any(dim=0).nonzero()[0].item())
        self.mask = self.mask[:, first:]
        self.positions = self.positions[index]
        self.keys = [k[index][:, :, first:] for k in self.keys]
        self.values = [v[index][:, :, first:] for v in self.values]
        return done

    def _merge(self, keys: list[Any], values: list[Any], mask: Any, positions: Any) -> None:
        """Add prefilled rows' caches: both sides left-padded to the longer length, then stacked."""
        import torch

        if self.mask is None:
            self.keys, self.values, self.mask, self.positions = keys, values, mask, positions
            return
        width = max(self.mask.shape[1], mask.shape[1])

        def left_pad(t: Any, dim: int) -> Any:
            missing = width - t.shape[dim]
            if missing == 0:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        merged = (
            [torch.cat([left_pad(a, 2), left_pad(b, 2)]) for a, b in zip(self.keys, keys, strict=True)],
            [torch.cat([left_pad(a, 2), left_pad(b, 2)]) for a, b in zip(self.values, values, strict=True)],
            torch.cat([left_pad(self.mask, 1), left_pad(mask, 1)]),
            torch.cat([self.positions, positions]),
        )
        # assigned together once all are built: running out of memory half-way changes nothing
        self.keys, self.values, self.mask, self.positions = merged


def _tensors(cache: Any) -> tuple[list[Any], list[Any]]:
    """Per-layer key and value tensors of a transformers cache."""
    return [layer.keys for layer in cache.layers], [layer.values for layer in cache.layers]
