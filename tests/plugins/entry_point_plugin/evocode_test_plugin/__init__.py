"""A mutator shipped by another package and found through the ``evocode.mutators`` entry point."""

from evocode.mutation import Mutator


class HalveLogEvery(Mutator):
    """Logging more often costs little; the tests use this plugin to see a third-party edit applied."""

    name = "halve_log_every"
    category = "hyperparameter"

    def propose(self, program, rng):
        every = program.value("LOG_EVERY")
        if not isinstance(every, int) or every < 2:
            return None
        return self.edit("LOG_EVERY", str(every // 2), f"LOG_EVERY {every} → {every // 2}")
