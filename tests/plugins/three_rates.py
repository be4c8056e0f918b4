"""Mutators of three_rates_seed.py, one per learning rate, each of which always helps there."""

from evocode.mutation import Mutator


class _LowerARate(Mutator):
    category = "optimization"
    constant = ""

    def propose(self, program, rng):
        rate = program.value(self.constant)
        if not isinstance(rate, float):
            return None
        return self.edit(self.constant, repr(rate / 4), f"{self.constant} {rate} → {rate / 4}")


class LowerTheTableRate(_LowerARate):
    """The bigram table's learning rate is far too high: dividing it by four helps."""

    name = "lower_the_table_rate"
    constant = "TABLE_LR"


class LowerTheBiasRate(_LowerARate):
    """The unigram bias's learning rate is far too high: dividing it by four helps."""

    name = "lower_the_bias_rate"
    constant = "BIAS_LR"


class LowerTheScaleRate(_LowerARate):
    """The logits' scale's learning rate is far too high: dividing it by four helps."""

    name = "lower_the_scale_rate"
    constant = "SCALE_LR"
