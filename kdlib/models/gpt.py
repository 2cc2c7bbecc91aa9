"""GPT-2-style character model, used as Nano-GPT (teacher) and Pico-GPT (student).

Paper (Section 4.2.2, F.1): "GPT2-style", n_embd 384 (Pico: 192), 6 heads, 6 blocks, dropout 0.2, block size 256,
vocab 65, citing Karpathy. Two models answer that description (the ``gpt-architecture`` reading,
:mod:`kdlib.setups.readings`), both here as :data:`STYLES` of one pre-LayerNorm decoder:

- ``lecture``: the model of Karpathy's lecture script ``gpt.py``, whose header is the paper's recipe (lr 3e-4,
  batch 64, 5,000 iterations, dropout 0.2): ReLU MLP, bias-free query/key/value projections (one fused matrix
  here, the same as its per-head ones), dropout on the attention weights, after each residual branch and
  nowhere else (none after the embeddings), an untied ``lm_head`` with a bias, every Linear and Embedding
  drawn from N(0, 0.02);
- ``nanogpt``: nanoGPT's ``model.py``: GELU MLP, biases everywhere, dropout also after the embeddings, the
  ``lm_head`` tied to the token embedding, and the residual projections drawn at 0.02 / sqrt(2 n_layer).

State dict keys are the same in both (``lm_head.bias`` only in the lecture model), so a feature layer such as
``blocks.4`` names the same block.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import multi_head_self_attention


#: What distinguishes the two GPTs the paper's description fits (see the module docstring).
STYLES = {
    "nanogpt": dict(activation="gelu", qkv_bias=True, embedding_dropout=True, tied_head=True, scaled_init=True),
    "lecture": dict(activation="relu", qkv_bias=False, embedding_dropout=False, tied_head=False, scaled_init=False),
}


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.2
    bias: bool = True  # the MLP's, LayerNorms' and output projections' biases
    style: str = "nanogpt"

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"unknown GPT style {self.style!r}: allowed are {list(STYLES)}")

    def __getattr__(self, name):  # the style's switches read as fields: config.activation, config.tied_head, ...
        if name in STYLES["nanogpt"]:
            return STYLES[self.style][name]
        raise AttributeError(name)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError(f"n_embd={config.n_embd} must be divisible by n_head={config.n_head}")
        self.n_head, self.dropout = config.n_head, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias and config.qkv_bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = multi_head_self_attention(x, self.c_attn, self.c_proj, self.n_head, causal=True,
                                      dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.activation = F.gelu if config.activation == "gelu" else F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.activation(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only transformer; ``forward(idx [B, L]) -> logits [B, L, vocab]``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout if config.embedding_dropout else 0.0)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=not config.tied_head)
        if config.tied_head:
            self.wte.weight = self.lm_head.weight  # weight tying, as in nanoGPT
        self.apply(self._init_weights)
        if config.scaled_init:
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        L = idx.shape[1]
        if L > self.config.block_size:
            raise ValueError(f"sequence length {L} exceeds block_size {self.config.block_size}")
        pos = torch.arange(L, device=idx.device).expand_as(idx)  # per row: a pack's rows are its models' sequences
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, greedy: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue ``idx [B, L]`` by ``max_new_tokens`` characters (greedy, or sampled with ``generator``)."""
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.config.block_size:])[:, -1]
            if greedy:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(F.softmax(logits, -1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx


def gpt(num_classes: int, **kwargs) -> GPT:
    """Character GPT over ``num_classes`` tokens; kwargs are :class:`GPTConfig` fields."""
    return GPT(GPTConfig(vocab_size=num_classes, **kwargs))
