"""Mutators that break the program on purpose: evolution must record the damage and go on."""

from evocode.mutation import Mutator


class _Saboteur(Mutator):
    category = "optimization"
    site = ""
    code = ""

    def propose(self, program, rng):
        if self.site not in program.sites:
            return None
        return self.edit(self.site, self.code, self.name)


class Crash(_Saboteur):
    """A program that raises before training must end as `crash`."""

    name = "sabotage_crash"
    site = "main: {optimizer = make_optimizer(model)}"
    code = "optimizer = make_optimizer(model)\nraise RuntimeError('sabotaged')\n"


class Hang(_Saboteur):
    """A program that never finishes must end as `timeout`."""

    name = "sabotage_hang"
    site = "main: {model.train()}"
    code = "model.train()\nwhile True:\n    pass\n"


class Peek(_Saboteur):
    """Dropping `is_causal` lets attention see the future (SDPA's default is non-causal): must end as `integrity`."""

    name = "sabotage_peek"
    site = "CausalSelfAttention.forward: F.scaled_dot_product_attention()"
    code = "F.scaled_dot_product_attention(q, k, v)"
