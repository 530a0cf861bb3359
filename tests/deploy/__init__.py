"""Deployment tests: the Helm chart renders, validates and stays in sync with the code."""
