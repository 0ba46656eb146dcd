"""Facts about one module, computed once and shared by every rule.

`ModuleIndex` is built by a single walk over the tree (`walk.py`); rules read its facts rather than
walking the tree themselves. The heavier facts (training loops, precision) are computed lazily the first
time a rule asks for them and then cached on the index.
"""
