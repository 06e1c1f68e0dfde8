"""The official per-sample scorers (OpenBMB/InfiniteBench ``src/compute_scores.py``), each in [0, 1].

Every scorer takes the model's output and the golds as strings (``prompting.golds``); numbers are
turned back into numbers where the official code compares numbers.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_CN_PUNCTUATION = ("！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿"
                   "–—‘’‛“”„‟…‧﹏.")
_EN_PUNCTUATION = set(string.punctuation)
_ZH_PUNCTUATION = set(string.punctuation + _CN_PUNCTUATION)
_RETRIEVAL_SEPARATORS = ("\n", ":", '"', "'", ".", ",", "?", "!", "{", "}")


def _replace_all(text: str, chars, by: str = " ") -> str:
    for c in chars:
        text = text.replace(c, by)
    return text


def _squeeze_spaces(text: str) -> str:
    while "  " in text:
        text = text.replace("  ", " ")
    return text


def first_int(prediction: str) -> str:
    """The first run of digits in ``prediction`` ('' if none)."""
    match = re.search(r"[0-9]+", prediction)
    return match.group(0) if match else ""


def score_first_int(prediction: str, golds: list[str]) -> float:
    """passkey, number_string: the first integer of the output equals the gold."""
    return float(first_int(prediction) == golds[0])


def score_kv_retrieval(prediction: str, golds: list[str]) -> float:
    """The gold value is one of the output's words (split on spaces and punctuation)."""
    return float(golds[0] in _replace_all(prediction, _RETRIEVAL_SEPARATORS).split())


def score_code_run(prediction: str, golds: list[str]) -> float:
    """The output's last word, read as an integer, equals the gold."""
    words = _replace_all(prediction.strip(), ("\n", ".", "`", "'", '"', ":")).split()
    if not words:
        return 0.0
    try:
        return float(int(words[-1]) == int(golds[0]))
    except ValueError:
        return 0.0


def score_code_debug(prediction: str, golds: list[str]) -> float:
    """golds = [function name, letter]: ``X.``/``X:`` at the start, else what follows an answer prefix."""
    function_name, letter = golds[0], golds[1]
    pred = prediction.strip()
    if pred[:2] in (f"{letter}.", f"{letter}:"):
        return 1.0
    pred = _squeeze_spaces(_replace_all(pred, ("\n", "`", "'", '"', "-", "*", "Option", "option")))
    for prefix in ("answer is:", "is:", "answer:", "correct option is:"):
        at = pred.find(prefix)
        if at == -1:
            continue
        if len(pred) < at + len(prefix) + 1:  # the output ends with the prefix
            return 0.0
        rest = pred[at + len(prefix) + 1:]
        return float(rest.startswith(letter) or rest.startswith(function_name))
    return 0.0


def score_longbook_choice(prediction: str, golds: list[str]) -> float:
    """golds = [option text, letter]: a leading letter, the option itself, an answer prefix, or the first
    standalone letter A-D, in that order."""
    pred = prediction.strip()
    if pred == "":
        return 0.0
    if pred[0] in "ABCD":
        return float(pred[0] in golds)
    if pred in golds:
        return 1.0
    pred = _squeeze_spaces(_replace_all(pred, ("\n", '"', "'", ".", ",", "?", "!", "{", "}")))
    for prefix in ("answer is:", "answer:", "answer is", "option is"):
        at = pred.find(prefix)
        if at == -1:
            continue
        if len(pred) < at + len(prefix) + 1:
            return 0.0
        rest = pred[at + len(prefix) + 1:]
        return float(any(rest.startswith(g) for g in golds))
    for word in pred.split():
        if word in "ABCD":  # as in the official code: any substring of "ABCD" stops the search
            return float(word in golds)
    return 0.0


def _as_number(text: str) -> int | float:
    return int(text) if re.fullmatch(r"-?[0-9]+", text.strip()) else float(text)


def score_math_find(prediction: str, golds: list[str]) -> float:
    """The output's first number equals the gold (compared as an int for an int gold, else a float)."""
    gold = _as_number(golds[0])
    match = re.search(r"\d+\.\d+|\d+", prediction)
    if match is None:
        return 0.0
    found = match.group(0)
    try:
        return float(int(found) == gold if isinstance(gold, int) else float(found) == gold)
    except ValueError:  # a decimal where an int is expected (the official code would crash): wrong
        return 0.0


def score_longdialogue(prediction: str, golds: list[str]) -> float:
    """The first gold name is one of the output's words, upper-cased."""
    words = _replace_all(prediction.strip(), _RETRIEVAL_SEPARATORS).split()
    return float(golds[0] in [w.upper() for w in words])


def normalize_en(text: str) -> str:
    """Lower-case, drop punctuation and articles, squeeze whitespace (SQuAD's normalisation)."""
    text = "".join(c for c in text.lower() if c not in _EN_PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def normalize_zh(text: str) -> str:
    """Lower-case, drop Chinese and ASCII punctuation and all whitespace."""
    text = "".join(c for c in text.lower() if c not in _ZH_PUNCTUATION)
    return "".join(text.split())


def f1(prediction_tokens, gold_tokens) -> float:
    common = Counter(prediction_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def score_qa_eng(prediction: str, golds: list[str]) -> float:
    """Best token F1 over the golds, after English normalisation."""
    return max((f1(normalize_en(prediction).split(), normalize_en(g).split()) for g in golds), default=0.0)


def score_qa_chn(prediction: str, golds: list[str]) -> float:
    """Best character F1 over the golds, after Chinese normalisation."""
    return max((f1(list(normalize_zh(prediction)), list(normalize_zh(g))) for g in golds), default=0.0)


def _rouge_tokens(text: str) -> list[str]:
    """rouge-score's default tokenisation: lower-case, runs of [a-z0-9] only, no stemming."""
    return re.findall(r"[a-z0-9]+", text.lower())


def _lcs_positions(reference: list[str], candidate: list[str]) -> set[int]:
    """Positions in ``reference`` of one longest common subsequence with ``candidate``
    (the one rouge-score's back-tracking picks: on ties, step back in the reference)."""
    rows, cols = len(reference), len(candidate)
    table = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(1, rows + 1):
        for j in range(1, cols + 1):
            if reference[i - 1] == candidate[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    positions, i, j = set(), rows, cols
    while i > 0 and j > 0:
        if reference[i - 1] == candidate[j - 1]:
            positions.add(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return positions


def rouge_lsum_fallback(prediction: str, reference: str) -> float:
    """Summary-level ROUGE-L F1 (sentences split on newlines, union LCS per reference sentence, each
    token matched at most as often as it occurs), matching rouge-score's ``rougeLsum``."""
    ref_sents = [_rouge_tokens(s) for s in reference.split("\n") if s]
    cand_sents = [_rouge_tokens(s) for s in prediction.split("\n") if s]
    ref_total, cand_total = sum(map(len, ref_sents)), sum(map(len, cand_sents))
    if not ref_total or not cand_total:
        return 0.0
    ref_left = Counter(t for s in ref_sents for t in s)
    cand_left = Counter(t for s in cand_sents for t in s)
    hits = 0
    for ref in ref_sents:
        union = set()
        for cand in cand_sents:
            union |= _lcs_positions(ref, cand)
        for token in (ref[i] for i in sorted(union)):
            if ref_left[token] > 0 and cand_left[token] > 0:
                hits += 1
                ref_left[token] -= 1
                cand_left[token] -= 1
    precision, recall = hits / cand_total, hits / ref_total
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def rouge_lsum(prediction: str, reference: str) -> float:
    """ROUGE-Lsum F1 through the ``rouge-score`` package (what the official ``evaluate`` metric runs),
    or our own implementation of it when the package is missing."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        return rouge_lsum_fallback(prediction, reference)
    scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=False)
    return scorer.score(reference, prediction)["rougeLsum"].fmeasure


def score_summary(prediction: str, golds: list[str]) -> float:
    """Best ROUGE-Lsum F1 over the reference summaries."""
    return max((rouge_lsum(prediction, g) for g in golds), default=0.0)


def score_math_calc(prediction: str, golds: list[str]) -> float:
    """The fraction of the gold values that the output's digit runs reproduce before the first error."""
    predicted = [int(d) for d in re.split(r"[^0-9]", prediction) if d]
    gold = [int(g) for g in golds]
    correct = 0
    for want, got in zip(gold, predicted):
        if want != got:
            break
        correct += 1
    return correct / len(gold) if gold else 0.0


SCORERS = {
    "passkey": score_first_int,
    "number_string": score_first_int,
    "kv_retrieval": score_kv_retrieval,
    "code_run": score_code_run,
    "code_debug": score_code_debug,
    "math_find": score_math_find,
    "math_calc": score_math_calc,
    "longdialogue_qa_eng": score_longdialogue,
    "longbook_choice_eng": score_longbook_choice,
    "longbook_qa_eng": score_qa_eng,
    "longbook_qa_chn": score_qa_chn,
    "longbook_sum_eng": score_summary,
}


def score(split: str, prediction: str, golds: list[str]) -> float:
    """The official score of one output for one InfiniteBench split."""
    return float(SCORERS[split](prediction, golds))


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    return {"score": score(doc["split"], results[0], doc["outputs"])}
