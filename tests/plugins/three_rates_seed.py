"""A bigram model with three independent constants set badly: the seed of the stacking tests.

The bigram table, the unigram bias and the logits' scale each have their
own learning rate, all far too high; lowering any helps at a tiny budget,
and lowering several helps more.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from evocode import harness

TABLE_LR = 20.0
BIAS_LR = 20.0
SCALE_LR = 20.0


class Bigram(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(harness.vocab_size, harness.vocab_size)
        self.bias = nn.Parameter(torch.zeros(harness.vocab_size))
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, idx):
        return self.scale * self.table(idx) + self.bias


def main():
    model = Bigram().to(harness.device)
    optimizer = torch.optim.Adam([{"params": [model.table.weight], "lr": TABLE_LR},
                                  {"params": [model.bias], "lr": BIAS_LR}, {"params": [model.scale], "lr": SCALE_LR}])
    for x, y in harness.batches(8, 32):
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    harness.finish(model)


if __name__ == "__main__":
    main()
