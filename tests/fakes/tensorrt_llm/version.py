"""Mirrors tensorrt_llm/version.py. The '+fake' suffix keeps it from passing for a release."""
__version__ = "1.2.0+fake"
