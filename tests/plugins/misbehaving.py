"""File plugins that misbehave: a run must skip them with a warning that names them, and go on."""

from evocode.mutation import Mutator


class Raises(Mutator):
    """A mutator with a bug."""

    name = "raises"
    category = "hyperparameter"

    def propose(self, program, rng):
        raise RuntimeError("this plugin has a bug")


class WritesBrokenCode(Mutator):
    """A mutator whose edit does not parse."""

    name = "writes_broken_code"
    category = "architecture"

    def propose(self, program, rng):
        return self.edit("LEARNING_RATE", "3e-3 +", "LEARNING_RATE → broken")


class WritesUncompilableCode(Mutator):
    """A mutator whose program parses but does not compile (a keyword given twice)."""

    name = "writes_uncompilable_code"
    category = "architecture"

    def propose(self, program, rng):
        return self.edit("main: model.train()", "model.train(mode=True, mode=False)", "train twice over")


class TouchesHarness(Mutator):
    """A mutator that tries to change what is measured."""

    name = "touches_harness"
    category = "data"

    def propose(self, program, rng):
        return self.edit("main: total_steps", "harness.budget", "read the harness")
