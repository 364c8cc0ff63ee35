"""The run's typed settings (eval/settings.py): what the tasks and the pipeline's stages read,
and the identities they build, equal to the ones built from the config as the records spell it."""
from __future__ import annotations

import copy
import json

import pytest

from conftest import ROOT
from eval.pipeline import plan
from eval.records import record_id
from eval.settings import RunSettings, TextSettings


def test_the_settings_are_typed_sections_of_the_resolved_config(make_config):
    run = RunSettings.from_config(make_config(**{"eval.max_windows": 4, "engine.batch_size": 2,
                                                 "kernels.convert": "true"}))
    assert run.model.name == "tiny-llama-wt2" and run.model.dtype == "float32"
    assert run.eval.datasets == ("wikitext2",) and run.eval.max_windows == 4 and run.eval.zeroshot.tasks == ()
    assert run.engine.batch_size == 2 and run.engine.keep_codes and run.convert
    assert run.calib.source == "file" and run.calib.separator == "\n\n"
    assert run.timing.repeats == 5 and run.timing.inputs is None


def test_a_text_source_names_its_separator_only_where_the_config_does():
    assert TextSettings("c4", 128).identity() == {"source": "c4", "nsamples": 128}
    assert TextSettings("wikitext2", 64, join=" ").identity() == {"source": "wikitext2", "nsamples": 64, "join": " "}
    assert TextSettings("file", path="x.txt", join="\n\n").identity(with_nsamples=False) == \
        {"source": "file", "join": "\n\n"}


# one record of each kind of identity: a dense and a calibrated decoder run, a trained decoder run
# with its own training text, a trained decoder run on the calibration text, a dense, a
# post-training and a trained encoder run
PUBLISHED = [("tiny-llama-wt2", "c2ca6ab37e70d211"), ("tiny-llama-wt2", "9029d5debebfa585"),
             ("tiny-llama-wt2", "574d25c5ae165a55"), ("tiny-llama-wt2", "814aec23a4f2a5c8"),
             ("minilm-l6", "270dc41dcb1de05c"), ("minilm-l6", "4bddcad3b1de4ecc"),
             ("minilm-l6", "437e9b418c7250f2")]


@pytest.mark.parametrize("folder, rid", PUBLISHED)
def test_a_published_record_planned_again_from_its_config_has_its_own_id(folder, rid):
    record = json.loads((ROOT / "results" / folder / "runs" / f"{rid}.json").read_text())
    planned = plan(copy.deepcopy(record["config"]))
    identity = planned.dense_identity if record["kind"] == "dense" else planned.identity
    assert record_id({**identity, "numerics": record["identity"]["numerics"]}) == rid
