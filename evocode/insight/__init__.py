"""From a finished run to what a researcher acts on: a report to look at, a git history to ship, a distilled edit set to trust."""
