from __future__ import annotations

import pytest

from ledger.recorder import fingerprint
from middleware.retries import backoff_ms

pytestmark = pytest.mark.unit


def test_backoff_starts_at_2s_doubles_and_caps_at_8s():
    for _ in range(200):
        first, second, third, tenth = (backoff_ms(n, 2000, 8000) for n in (0, 1, 2, 9))
        assert 2000 <= first <= 2200
        assert 4000 <= second <= 4400
        assert third == 8000 and tenth == 8000


def test_fingerprint_ignores_line_numbers_but_not_locations():
    tb1 = 'Traceback\n  File "a.py", line 10, in f\n  File "b.py", line 3, in g\nValueError: x'
    tb2 = 'Traceback\n  File "a.py", line 12, in f\n  File "b.py", line 3, in g\nValueError: y'
    tb3 = 'Traceback\n  File "c.py", line 10, in h\nValueError: x'
    assert fingerprint("ValueError", tb1) == fingerprint("ValueError", tb2)
    assert fingerprint("ValueError", tb1) != fingerprint("ValueError", tb3)
    assert fingerprint("ValueError", tb1) != fingerprint("KeyError", tb1)
