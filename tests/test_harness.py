"""The test harness itself: the README's command runs the tests in pytest-xdist workers with
``--dist loadgroup``, and the expensive shared fixtures (a case's float64 reference, JAX's compiled
programs, a module's subprocess runs) are computed once only because the tests that share them carry one
``xdist_group``. A pytest and pytest-xdist pair that drops the groups (pytest 9.2 with pytest-xdist 3.8
does, silently) would not fail any test, only make the suite much slower: this test fails instead.
"""

from __future__ import annotations

import pytest


@pytest.mark.xdist_group("harness")
def test_xdist_groups_take_effect(request):
    if not request.config.getoption("loadgroup", default=False):
        pytest.skip("not run in pytest-xdist workers with --dist loadgroup")
    assert request.node.nodeid.endswith("@harness"), (
        f"{request.node.nodeid}: pytest-xdist ignored the test's xdist_group (a pytest release it does not "
        f"support yet?): the suite still passes, but computes every shared fixture once per worker"
    )
