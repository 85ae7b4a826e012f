"""A GPT in one file: config, attention, MLP, block, model. Nothing distributed lives here.

Pre-norm transformer blocks, causal self-attention through `scaled_dot_product_attention` (flash or
memory-efficient kernels where the device has them), a GELU or SwiGLU MLP, learned positions, and the
token embedding tied to the output head — GPT-2's architecture, initialised as GPT-2 was.

q, k and v are separate projections (not one fused qkv) so that tensor parallel can shard each of them
column-wise and every rank still holds whole heads; attention views heads as `-1` for the same reason
(a TP rank sees n_head / tp of them).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB_MULTIPLE = 64  # pad the embedding so the output matmul has friendly shapes


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 257  # the dataset's; the embedding is padded up to padded_vocab
    seq_len: int = 128  # the longest context (learned positions)
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    mlp: str = "gelu"  # "gelu" (GPT-2) or "swiglu" (LLaMA)
    dropout: float = 0.0
    bias: bool = False

    @property
    def padded_vocab(self) -> int:
        return -(-self.vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def to_json(self) -> dict:
        return asdict(self)


PRESETS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(n_layer=4, n_head=4, d_model=128, seq_len=128),  # seconds per step on a CPU
    "small": GPTConfig(n_layer=6, n_head=6, d_model=384, seq_len=256),
    "gpt2-124m": GPTConfig(n_layer=12, n_head=12, d_model=768, seq_len=1024),
    "gpt2-350m": GPTConfig(n_layer=24, n_head=16, d_model=1024, seq_len=1024),
    "gpt2-774m": GPTConfig(n_layer=36, n_head=20, d_model=1280, seq_len=1024),
    "gpt2-1.5b": GPTConfig(n_layer=48, n_head=25, d_model=1600, seq_len=1024),
}


def preset(name: str, **overrides) -> GPTConfig:
    """The named preset with fields replaced (vocab_size from the manifest, seq_len from the command line)."""
    if name not in PRESETS:
        raise KeyError(name)
    cfg = replace(PRESETS[name], **{k: v for k, v in overrides.items() if v is not None})
    if cfg.d_model % cfg.n_head:
        raise ValueError(f"d_model {cfg.d_model} is not divisible by n_head {cfg.n_head}")
    return cfg


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.head_dim = cfg.head_dim
        self.dropout = cfg.dropout
        self.q = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.k = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.v = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.proj.residual = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        # (B, T, heads, hd) -> (B, heads, T, hd); heads = -1 so a TP shard's local heads fit too
        q, k, v = (p(x).view(B, T, -1, self.head_dim).transpose(1, 2) for p in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        # SwiGLU's hidden width is 2/3 of 4d (rounded to 64) so both MLPs cost the same FLOPs
        hidden = 4 * cfg.d_model if not self.swiglu else -(-(8 * cfg.d_model // 3) // 64) * 64
        self.fc = nn.Linear(cfg.d_model, hidden, bias=cfg.bias)
        if self.swiglu:
            self.gate = nn.Linear(cfg.d_model, hidden, bias=cfg.bias)
        self.proj = nn.Linear(hidden, cfg.d_model, bias=cfg.bias)
        self.proj.residual = True
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.gate(x)) * self.fc(x) if self.swiglu else F.gelu(self.fc(x), approximate="tanh")
        return self.dropout(self.proj(h))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.mlp not in ("gelu", "swiglu"):
            raise ValueError(f"unknown mlp {cfg.mlp!r} (expected 'gelu' or 'swiglu')")
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.padded_vocab, cfg.d_model)
        self.wpe = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.padded_vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one matrix reads tokens in and scores them out
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        # GPT-2: N(0, 0.02) everywhere, residual output projections scaled by 1/sqrt(2 * n_layer) so the
        # residual stream's variance does not grow with depth; biases zero; norms at identity.
        if isinstance(m, nn.Linear):
            std = 0.02 / math.sqrt(2 * self.cfg.n_layer) if getattr(m, "residual", False) else 0.02
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, padded_vocab) or, with targets, the mean cross-entropy over all positions."""
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def num_params(self, *, embedding: bool = True) -> int:
        """Parameters counted once (the tied head is the embedding); without the position table if
        embedding=False, which is the N of the 6N FLOPs rule (position lookups cost no matmul)."""
        n = sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
        return n if embedding else n - self.wpe.weight.numel()


def flops_per_token(cfg: GPTConfig, seq_len: int | None = None) -> float:
    """Training FLOPs per token, forward + backward: 6 N + 12 L d T (Kaplan et al. 2020, PaLM appendix B).

    6N: every non-position parameter takes part in one multiply-add per token forward (2 FLOPs) and
    two backward (4 FLOPs); the tied head counts because its matmul runs. 12 L d T: attention's QK^T and
    AV matmuls, counted over the full T x T square as is conventional (causal kernels skip about half,
    so MFU by this formula is comparable with published numbers, not an upper bound on hardware use).
    """
    T = seq_len or cfg.seq_len
    d, L, V = cfg.d_model, cfg.n_layer, cfg.padded_vocab
    hidden = 4 * d if cfg.mlp == "gelu" else -(-(8 * d // 3) // 64) * 64
    mlp = (3 if cfg.mlp == "swiglu" else 2) * d * hidden
    n = V * d + L * (4 * d * d + mlp)  # weights of the matmuls; norms and biases are negligible
    return 6 * n + 12 * L * d * T


@torch.no_grad()
def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 0.8,
             top_k: int | None = 50, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample continuations of idx (B, T); the context is cropped to the model's seq_len."""
    cfg = model.cfg
    for _ in range(max_new_tokens):
        logits = model(idx[:, -cfg.seq_len:])[:, -1, :].float()
        logits[:, cfg.vocab_size:] = -math.inf  # padding rows are never real tokens
        if temperature <= 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, cfg.vocab_size)).values[:, -1:]
                logits[logits < kth] = -math.inf
            nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
        idx = torch.cat([idx, nxt], dim=1)
    return idx
