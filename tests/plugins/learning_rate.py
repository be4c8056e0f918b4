"""Two mutators of bad_lr_seed.py's LEARNING_RATE: one always helps there, the other always hurts."""

from evocode.mutation import Mutator


class _ScaleLearningRate(Mutator):
    category = "optimization"
    factor = 1.0

    def propose(self, program, rng):
        rate = program.value("LEARNING_RATE")
        if not isinstance(rate, float):
            return None
        return self.edit("LEARNING_RATE", repr(rate * self.factor), f"LEARNING_RATE {rate} → {rate * self.factor}")


class LowerLearningRate(_ScaleLearningRate):
    """The seed's learning rate is far too high: halving it always helps."""

    name = "lower_learning_rate"
    factor = 0.5


class RaiseLearningRate(_ScaleLearningRate):
    """The seed's learning rate is far too high: doubling it always hurts."""

    name = "raise_learning_rate"
    factor = 2.0
