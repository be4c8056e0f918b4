"""A small byte-level GPT, trained on evocode's token budget and scored by its harness.

Run by hand with `python seeds/train.py`; evocode evolves this file. The
hyperparameters are named constants at the top so that every edit has a
clear site, and the data, the token budget and the score come from
evocode.harness, which edits never touch.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from evocode import harness

# Model
N_LAYER = 4
N_HEAD = 4
N_EMBD = 128
MLP_RATIO = 4
DROPOUT = 0.0
BIAS = False
TIE_WEIGHTS = True
INIT_STD = 0.02

# Optimization
BATCH_SIZE = 16
SEQ_LEN = 128
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 0.1
BETA1 = 0.9
BETA2 = 0.95
ADAM_EPS = 1e-8
WARMUP_FRACTION = 0.05
FINAL_LR_FRACTION = 0.1
GRAD_CLIP = 1.0
LOG_EVERY = 50

assert N_EMBD % N_HEAD == 0, "N_EMBD must be divisible by N_HEAD"


class CausalSelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(N_EMBD, 3 * N_EMBD, bias=BIAS)
        self.proj = nn.Linear(N_EMBD, N_EMBD, bias=BIAS)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(N_EMBD, dim=2)
        q = q.view(B, T, N_HEAD, C // N_HEAD).transpose(1, 2)
        k = k.view(B, T, N_HEAD, C // N_HEAD).transpose(1, 2)
        v = v.view(B, T, N_HEAD, C // N_HEAD).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=DROPOUT if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(N_EMBD, MLP_RATIO * N_EMBD, bias=BIAS)
        self.proj = nn.Linear(MLP_RATIO * N_EMBD, N_EMBD, bias=BIAS)
        self.dropout = nn.Dropout(DROPOUT)

    def forward(self, x):
        x = self.fc(x)
        x = F.gelu(x)
        x = self.proj(x)
        return self.dropout(x)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(N_EMBD, bias=BIAS)
        self.attn = CausalSelfAttention()
        self.ln_2 = nn.LayerNorm(N_EMBD, bias=BIAS)
        self.mlp = MLP()

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(harness.vocab_size, N_EMBD)
        self.wpe = nn.Embedding(harness.context_length, N_EMBD)
        self.drop = nn.Dropout(DROPOUT)
        self.blocks = nn.ModuleList([Block() for _ in range(N_LAYER)])
        self.ln_f = nn.LayerNorm(N_EMBD, bias=BIAS)
        self.lm_head = nn.Linear(N_EMBD, harness.vocab_size, bias=False)
        if TIE_WEIGHTS:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # Residual projections are scaled down so the residual stream does not grow with depth (GPT-2).
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=INIT_STD / math.sqrt(2 * N_LAYER))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)

    def forward(self, idx):
        B, T = idx.shape
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        return self.lm_head(x)


def lr_at(step, total_steps):
    """Linear warmup, then cosine decay to FINAL_LR_FRACTION of the peak."""
    warmup = max(1, int(WARMUP_FRACTION * total_steps))
    if step < warmup:
        return LEARNING_RATE * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return LEARNING_RATE * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * cosine)


def make_optimizer(model):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": WEIGHT_DECAY},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=LEARNING_RATE, betas=(BETA1, BETA2), eps=ADAM_EPS)


def main():
    model = GPT().to(harness.device)
    optimizer = make_optimizer(model)
    total_steps = harness.budget // (BATCH_SIZE * SEQ_LEN)
    model.train()
    for step, (x, y) in enumerate(harness.batches(BATCH_SIZE, SEQ_LEN)):
        lr = lr_at(step, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if GRAD_CLIP > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        if step % LOG_EVERY == 0:
            print(f"step {step:5d}/{total_steps} | loss {loss.item():.4f} | lr {lr:.2e}", flush=True)
    harness.finish(model)


if __name__ == "__main__":
    main()
