"""A bigram model trained with a learning rate far too high: lowering it helps, raising it hurts.

The seed of the credit tests: small enough to train in a second, with one
constant whose every halving improves the score at a tiny budget, and one
the script never reads, so changing it changes nothing.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from evocode import harness

LEARNING_RATE = 20.0
UNUSED_SCALE = 1.0


class Bigram(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(harness.vocab_size, harness.vocab_size)

    def forward(self, idx):
        return self.table(idx)


def main():
    model = Bigram().to(harness.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    for x, y in harness.batches(8, 32):
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    harness.finish(model)


if __name__ == "__main__":
    main()
