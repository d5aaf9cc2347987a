"""Reliability tests that fail now because of bugs in layers whose owners were still editing them
(not collected). Each module's docstring names the bug; the reliability report gives the fix.
Run them with ``pytest -c /dev/null --rootdir . tests/reliability/pending/test_rel_pending_*.py``
(``-m slow`` for the Dask one) and move a test up into tests/reliability once it passes.
"""

collect_ignore_glob = ["*.py"]
