"""trainlint: find the bugs that make deep-learning training spike, go NaN or stop learning."""

__version__ = "0.1.0"
