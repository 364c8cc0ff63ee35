"""SQuAD v1.1: loading (hub or the official JSON), the documented offline `squad_dev_split`
variant, and the official evaluation (EM and F1 after answer normalisation, max over the gold
answers, x100)."""
from __future__ import annotations

import functools
import json
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from eval.data import DataSource

SQUAD_DEV = "squad-v1.1/dev-v1.1.json"
SQUAD_TRAIN = "squad-v1.1/train-v1.1.json"
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


@dataclass(frozen=True)
class QAExample:
    id: str
    title: str
    context: str
    question: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]


# --- the official v1.1 metric ------------------------------------------------------------------

def normalize_answer(s: str) -> str:
    """Lower-case, strip punctuation and the articles a/an/the, collapse whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def f1_score(prediction: str, ground_truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def evaluate(examples: list[QAExample], predictions: dict[str, str]) -> dict[str, float]:
    """Official evaluate-v1.1: a question without a prediction scores 0."""
    em = f1 = 0.0
    for ex in examples:
        if ex.id not in predictions:
            continue
        pred = predictions[ex.id]
        em += max(exact_match_score(pred, g) for g in ex.answers)
        f1 += max(f1_score(pred, g) for g in ex.answers)
    n = len(examples)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}


# --- data --------------------------------------------------------------------------------------

def examples_from_json(data: dict) -> list[QAExample]:
    out = []
    for article in data["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                out.append(QAExample(qa["id"], article["title"], para["context"], qa["question"],
                                     tuple(a["text"] for a in qa["answers"]),
                                     tuple(a["answer_start"] for a in qa["answers"])))
    return out


@functools.lru_cache(maxsize=4)
def _examples_from_file(path: str, _mtime_ns: int) -> tuple[QAExample, ...]:
    """Parsed once per file version (runs read the same file for calibration and evaluation)."""
    return tuple(examples_from_json(json.loads(Path(path).read_text(encoding="utf-8"))))


def load_squad(src: DataSource, split: str = "validation") -> list[QAExample]:
    """SQuAD v1.1 from the official JSON under the data root, or `squad` from the Hub."""
    local = src.local(SQUAD_DEV if split == "validation" else SQUAD_TRAIN, f"SQuAD v1.1 {split}")
    if local is not None:
        path = Path(local).resolve()
        return list(_examples_from_file(str(path), path.stat().st_mtime_ns))
    from datasets import load_dataset
    ds = load_dataset("squad", split=split)
    return [QAExample(r["id"], r["title"], r["context"], r["question"], tuple(r["answers"]["text"]),
                      tuple(r["answers"]["answer_start"])) for r in ds]


def squad_dev_split(examples: list[QAExample]) -> tuple[list[QAExample], list[QAExample]]:
    """The offline variant `squad_dev_split`: the dev articles alternate, in file order, between a
    fine-tuning half (even positions) and an evaluation half (odd positions). It is not the
    SQuAD protocol and every record and table names it as such."""
    titles = list(dict.fromkeys(ex.title for ex in examples))
    train_titles = set(titles[0::2])
    return ([ex for ex in examples if ex.title in train_titles],
            [ex for ex in examples if ex.title not in train_titles])
