"""Operator and developer tools: the one-machine stack runner and process helpers."""
