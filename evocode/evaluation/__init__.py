"""Evaluating one candidate: the runner (one program in, one record out) and what it builds on."""
