"""What the search decides: who breeds, who survives, and what it has learned."""
