"""evocode's built-in mutators, one module per theme.

Every public Mutator subclass with a ``name`` in a module of this package is a
built-in; adding a module here adds its mutators, nothing else to register.
"""
