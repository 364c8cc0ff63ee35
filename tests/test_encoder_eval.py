"""Encoder-task evaluation: the official SQuAD v1.1 metric, GLUE metrics and loaders."""
from __future__ import annotations

import random

import pytest
import torch

from eval import glue, squad
from eval.data import DataSource


def _ex(i, answers):
    return squad.QAExample(str(i), "t", "ctx", "q?", tuple(answers), tuple(0 for _ in answers))


def test_squad_metric_matches_the_official_definition():
    examples = [_ex(1, ["Denver Broncos", "The Denver Broncos"]), _ex(2, ["Santa Clara, California"]),
                _ex(3, ["an apple", "a pear"]), _ex(4, ["1998"])]
    preds = {"1": "the Denver Broncos!", "2": "Santa Clara", "3": "Pear."}  # "4" has no prediction
    # EM: 1, 0, 1, 0. F1: 1, P=1 R=2/3 -> 0.8, 1, 0.
    assert squad.evaluate(examples, preds) == pytest.approx({"exact_match": 50.0, "f1": 70.0})
    assert squad.normalize_answer("  The  Eiffel-Tower, a landmark. ") == "eiffeltower landmark"
    assert squad.f1_score("x b b", "b b c") == pytest.approx(2 / 3)  # multiset overlap
    assert squad.f1_score("a b b", "b b c") == pytest.approx(0.8)    # "a" is an article: P=1, R=2/3


def test_real_dev_set_gold_answers_score_100_and_split_by_article(data_root):
    examples = squad.load_squad(DataSource.from_config(data_root, offline=True))
    assert len(examples) == 10570 and len({e.title for e in examples}) == 48
    assert squad.evaluate(examples, {e.id: e.answers[0] for e in examples}) == {"exact_match": 100.0, "f1": 100.0}
    train, test = squad.squad_dev_split(examples)
    assert len(train) + len(test) == 10570
    assert not {e.title for e in train} & {e.title for e in test}
    assert len({e.title for e in train}) == len({e.title for e in test}) == 24


def test_glue_metrics_equal_sklearn():
    from sklearn.metrics import accuracy_score, f1_score
    rng = random.Random(0)
    labels = [rng.randint(0, 1) for _ in range(500)]
    preds = [y if rng.random() < 0.8 else 1 - y for y in labels]
    assert glue.accuracy(preds, labels) == pytest.approx(accuracy_score(labels, preds))
    assert glue.f1_positive(preds, labels) == pytest.approx(f1_score(labels, preds, pos_label=1))
    labels3 = [rng.randint(0, 2) for _ in range(300)]
    preds3 = [rng.randint(0, 2) for _ in range(300)]
    assert glue.accuracy(preds3, labels3) == pytest.approx(accuracy_score(labels3, preds3))


def test_glue_tsv_loaders_read_the_real_formats(tmp_path):
    """Small files in the GLUE distribution's formats (no figures come from them)."""
    mnli = tmp_path / "glue/MNLI/dev_matched.tsv"
    mnli.parent.mkdir(parents=True)
    cols = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
            "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "label2", "label3",
            "label4", "label5", "gold_label"]
    rows = [["0", "63735", "63735n", "slate", "( x )", "( y )", "(ROOT x)", "(ROOT y)", "The new rights are nice",
             "Everyone really likes the newest benefits", "neutral", "entailment", "neutral", "neutral", "neutral",
             "neutral"],
            ["1", "91383", "91383c", "government", "( x )", "( y )", "(ROOT x)", "(ROOT y)", 'This site "includes" a list',
             "The Government Executive articles are not here", "contradiction", "contradiction", "contradiction",
             "contradiction", "contradiction", "contradiction"],
            ["2", "1", "1e", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", "a", "b", "entailment", "", "", "",
             "", "-"]]
    mnli.write_text("\t".join(cols) + "\n" + "\n".join("\t".join(r) for r in rows) + "\n")
    qqp = tmp_path / "glue/QQP/dev.tsv"
    qqp.parent.mkdir(parents=True)
    qqp.write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                   "201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so beautiful?\t0\n"
                   "263843\t69383\t380476\tI want to pursue PhD in Computer Science?\tHow can I pursue a PhD?\t1\n")
    src = DataSource.from_config(tmp_path, offline=True)
    m = glue.load_glue(src, "mnli", "validation_matched")
    assert [e.label for e in m] == [1, 2]  # no-consensus "-" rows are dropped, as in GLUE
    assert m[1].text_a == 'This site "includes" a list'
    q = glue.load_glue(src, "qqp", "validation")
    assert [e.label for e in q] == [0, 1] and q[1].text_b == "How can I pursue a PhD?"


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer
    from conftest import minilm_path
    return AutoTokenizer.from_pretrained(minilm_path())


def test_qa_features_place_every_answer_and_decode_back(data_root, minilm_tokenizer):
    import torch
    from eval.qa_features import decode, prepare_features

    examples = squad.load_squad(DataSource.from_config(data_root, offline=True))[:300]
    feats = prepare_features(examples, minilm_tokenizer, max_length=192, doc_stride=64, with_targets=True)
    assert feats.input_ids.shape[1] == 192 and len(feats.example_index) > len(examples)  # long contexts overflow
    spans = {}
    for f, i in enumerate(feats.example_index):
        s, e = int(feats.start_positions[f]), int(feats.end_positions[f])
        if s == 0:
            continue
        lo, hi = examples[i].answer_starts[0], examples[i].answer_starts[0] + len(examples[i].answers[0])
        offs = feats.offsets[f]  # the tightest token cover of the answer's characters
        assert offs[s][0] <= lo < offs[s][1] and offs[e][0] < hi <= offs[e][1]
        spans.setdefault(i, examples[i].context[offs[s][0]:offs[e][1]])
    assert len(spans) == len(examples)  # every answer lies inside at least one window
    # decoding one-hot logits at the target positions returns the gold text
    n = len(feats.example_index)
    start = torch.full((n, 192), -10.0)
    end = torch.full((n, 192), -10.0)
    for f in range(n):
        if int(feats.start_positions[f]):
            start[f, feats.start_positions[f]] = 10.0
            end[f, feats.end_positions[f]] = 10.0
    preds = decode(examples, feats, start, end)
    assert preds == {examples[i].id: text for i, text in spans.items()}
    assert squad.evaluate(examples, preds)["exact_match"] > 95  # the rest: answers inside a word piece


def test_training_features_are_tokenised_once_per_process_and_equal_a_direct_tokenisation(data_root, monkeypatch):
    """The training split's QA features are memoised per (task, data, tokenizer, length, stride):
    a second run draws the same batches without tokenising again; another length tokenises anew
    and replaces them."""
    from transformers import AutoTokenizer

    from conftest import minilm_path
    from eval.qa_features import prepare_features
    from eval.tasks import encoder
    from eval.settings import ModelSettings, RunSettings
    from eval.tasks.squad import SQuADDevSplit

    examples = squad.squad_dev_split(squad.load_squad(DataSource.from_config(data_root, offline=True)))[0][:12]
    monkeypatch.setattr(encoder, "_TRAIN_FEATURES", {})
    monkeypatch.setattr(SQuADDevSplit, "train_examples", lambda self: examples)
    calls = []
    monkeypatch.setattr(encoder, "prepare_features", lambda *a, **k: calls.append(a[2]) or prepare_features(*a, **k))
    tok = AutoTokenizer.from_pretrained(minilm_path())

    def task(max_length):
        run = RunSettings(ModelSettings("minilm", str(minilm_path())), data_root=str(data_root), offline=True)
        return SQuADDevSplit(run, {"name": "squad_dev_split", "max_length": max_length, "doc_stride": 32})

    first = task(64).training_batches(tok, 4, seed=3)
    again = task(64).training_batches(tok, 4, seed=3)
    assert calls == [64]
    direct = prepare_features(examples, tok, 64, 32, with_targets=True)
    order = list(range(direct.input_ids.shape[0]))
    random.Random(3).shuffle(order)
    for got in (first, again):
        assert torch.equal(torch.cat([x["input_ids"] for x in got]), direct.input_ids[order])
        assert torch.equal(torch.cat([x["start_positions"] for x in got]), direct.start_positions[order])
    task(96).training_batches(tok, 4, seed=3)
    assert calls == [64, 96] and len(encoder._TRAIN_FEATURES) == 1   # one split held at a time
