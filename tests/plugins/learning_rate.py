"""Mutators of bad_lr_seed.py: one that always helps there, one that always hurts, one whose site decides."""

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


class HalveAConstant(Mutator):
    """Halving either float constant of bad_lr_seed.py: the learning rate (helps) or one the script never reads (no change)."""

    name = "halve_a_constant"
    category = "hyperparameter"

    def propose(self, program, rng):
        name = ("LEARNING_RATE", "UNUSED_SCALE")[int(rng.integers(2))]
        value = program.value(name)
        if not isinstance(value, float):
            return None
        return self.edit(name, repr(value / 2), f"{name} {value} → {value / 2}")
