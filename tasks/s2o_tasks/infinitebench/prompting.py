"""The official prompt templates (OpenBMB/InfiniteBench ``src/prompt.py``) and how each split fills
them (``src/eval_utils.py``: ``create_prompt``, ``get_answer``).

Two of the official template sets are offered (metadata ``infinitebench_prompts``):
``open`` (default), the set the official scripts use for every open-weight model (YaRN-Mistral,
Yi-6B/34B-200K, ChatGLM3), and ``gpt4``, the set written for chat models.
"""

from __future__ import annotations

import re

from s2o_tasks.common import MalformedRecord

OPEN_TEMPLATES = {
    "passkey": "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz you about the important information.\n\n{context}\n\n{input}\n\nThe pass key is",  # noqa: E501
    "number_string": "There is an important info hidden inside a lot of irrelevant text. Find it. I will quiz you about the important information there.\n\n{context}\n\n{input}\n\nThe sequence of digits is",  # noqa: E501
    "kv_retrieval": "Extract the value corresponding to the specified key in the JSON object below.\n\n{context}\n\n{input}",  # noqa: E501
    "longbook_sum_eng": "Summarize the book below.\n\n{context}\n\nSummary:",
    "longbook_choice_eng": "Read the book and answer the question.\n\n{context}\n\nQuestion: {question}\nA. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\nD. {OPTION_D}\n\nThe letter of the correct answer is",  # noqa: E501
    "longbook_qa_eng": "Read the book and answer the question. Be very concise in your answer.\n\n{context}\n\nQuestion: {question}\nAnswer:",  # noqa: E501
    "longbook_qa_chn": "阅读以下书籍然后回答问题。\n\n{context}\n\n问题：{question}\n答案：",
    "math_find": "{prefix}\n\n{context}\n\n{input}",
    "math_calc": "Let us calculate the intermediate values of an expression.\n\nExpression: 1 + 3 + 4\nValues: [1, 4, 8]\n\nExpression: 8 - 3 + 2 - 4\nValues: [8, 5, 7, 3]\n\nExpression: {context}\nValues:",  # noqa: E501
    "code_run": "There is a function called {func} in the following Python code.\n\n{context}\n\nPlease compute the exact value of {func_call}. The value of {func_call} is",  # noqa: E501
    "code_debug": "Following is a Python code where exactly one of the functions/methods has a deliberate error that makes it crash.\n\n{context}\n\nOptions:\nA. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\nD. {OPTION_D}\n\nThe correct option is:",  # noqa: E501
    "longdialogue_qa_eng": "Below is a dialogue script where one random occurrence of a character name is replaced with \"$$MASK$$\", and you should try to guess who that character is.\n\n{context}\n\nThe name that has been replaced with $$MASK$$ is likely",  # noqa: E501
}

GPT4_TEMPLATES = {
    "passkey": "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there.\n\n{context}\n\n{input}",  # noqa: E501
    "number_string": "There is an important info hidden inside a lot of irrelevant text. Find it. I will quiz you about the important information there.\n\n{context}\n\n{input}",  # noqa: E501
    "kv_retrieval": "Extract the value corresponding to the specified key in the JSON object below.\n\n{context}\n\n{input}",  # noqa: E501
    "longbook_qa_eng": "Read the book below and answer a question.\n\n{context}\n\nQuestion: {question}\n\nBe very concise.",  # noqa: E501
    "longbook_choice_eng": "Read the book and answer the question.\n\n{context}\n\nQuestion: {question}\n\nOnly one of the following options is correct, tell me the answer using one single letter (A, B, C, or D). Don't say anything else.\nA. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\nD. {OPTION_D}",  # noqa: E501
    "longbook_sum_eng": "Summarize the following book.\n\n{context}",
    "longbook_qa_chn": "请根据以下书籍回答我的问题。\n\n{context}\n\n问题：{question}\n请尽量简短地回答。",
    "math_find": "{prefix}\n\n{context}\n\n{input}",
    "math_calc": "Compute the intermediate values in the following long expression.\n\n{context}",
    "code_run": "Following is a set of Python functions. There is a function called named {func}.\n\n{context}\n\nPlease give me the exact number of the return value of {func_call}. Be concise. Your response must end with the final returned value.",  # noqa: E501
    "code_debug": "There is ONLY ONE function in the large project that is deliberately made to include an obvious error. Please find the function that contains the most obvious errors. I will give you four options to narrow your scope. You can inspect the options and think. Eventually, tell me the answer using one single letter (A, B, C, or D).\n\n{context}\n\nWhich funtion has deliberate error?\nA. {OPTION_A}\nB. {OPTION_B}\nC. {OPTION_C}\nD. {OPTION_D}\n\nYou should first find the functions in the options. Repeat their content, inspect through code, and at last give me your answer for the function that has the deliberate and obvious error in A, B, C, or D.",  # noqa: E501
    "longdialogue_qa_eng": "Below is a dialogue script where one random occurrence of a character name is replaced with \"$$MASK$$\", and you should try to guess who that character is.\n\nThe dialogue:\n\n---\n\n{context}\n\n---\n\nEnd of dialogue.\n\nWhich character is most likely \"$$MASK$$\"? Just say the name used by the scriptwriter (before the colon marks) of one single character and nothing else.",  # noqa: E501
}

TEMPLATE_SETS = {"open": OPEN_TEMPLATES, "gpt4": GPT4_TEMPLATES}
CHOICE_SPLITS = ("code_debug", "longbook_choice_eng")
_FUNC_CALL = re.compile(r"func_[0-9]+\(\-?[0-9]+\)")
_TARGET_NUMBER = re.compile(r"The .+ of")


def _fields(record: dict, split: str) -> dict[str, str]:
    """Every value a template of this split may ask for."""
    question = record.get("input", "")
    fields = {"input": question, "question": question}
    options = record.get("options") or []
    if split in CHOICE_SPLITS:
        if len(options) < 4:
            raise MalformedRecord(f"{split} record {record.get('id')} has {len(options)} options, not 4")
        fields.update(OPTION_A=options[0], OPTION_B=options[1], OPTION_C=options[2], OPTION_D=options[3])
    if split == "code_run":
        calls = _FUNC_CALL.findall(question)
        if not calls:
            raise MalformedRecord(f"code_run record {record.get('id')}: no func_N(x) call in its input")
        fields.update(func=calls[0].split("(")[0], func_call=calls[0])
    if split == "math_find":
        found = _TARGET_NUMBER.findall(question)
        if not found:
            raise MalformedRecord(f"math_find record {record.get('id')}: no 'The ... of' in its input")
        # "The largest number of" -> "the largest number" (greedy: up to the last " of", as officially)
        fields["prefix"] = f"What is {found[0].lower()[:-3]} in the following list?"
    return fields


def prompt_parts(record: dict, split: str, style: str = "open") -> tuple[str, str, str]:
    """``(instruction, context, question)``: the official prompt is their concatenation."""
    if style not in TEMPLATE_SETS:
        raise ValueError(f"unknown infinitebench_prompts '{style}': use one of {', '.join(TEMPLATE_SETS)}")
    head, tail = TEMPLATE_SETS[style][split].split("{context}")
    fields = _fields(record, split)
    return head.format(**fields), record["context"], tail.format(**fields)


def golds(record: dict, split: str) -> list[str]:
    """The gold answers as strings: for the choice splits ``[option text, letter]`` (official ``get_answer``)."""
    answer = record["answer"]
    if split in CHOICE_SPLITS:
        options = record["options"]
        if isinstance(answer, list) and len(answer) == 2 and answer[1] in ("A", "B", "C", "D"):
            return [str(answer[0]), answer[1]]
        if not isinstance(answer, (list, str)) or (isinstance(answer, list) and len(answer) != 1):
            raise MalformedRecord(f"{split} record {record.get('id')}: unexpected answer {answer!r}")
        text = answer[0] if isinstance(answer, list) else answer
        if text not in options:
            raise MalformedRecord(f"{split} record {record.get('id')}: answer {text!r} is not one of its options")
        return [text, "ABCD"[options.index(text)]]
    if split == "math_calc" and isinstance(answer, list) and answer and isinstance(answer[0], list):
        answer = answer[0]
    values = [str(a) for a in answer] if isinstance(answer, list) else [str(answer)]
    _check_scorable(values, split, record)
    return values


def _check_scorable(values: list[str], split: str, record: dict) -> None:
    """MalformedRecord unless the split's scorer can read these golds: at least one, and numbers where
    it compares numbers (math_find: a number; math_calc: whole numbers)."""
    try:
        if not values:
            raise ValueError("no gold answer")
        if split == "math_find":
            float(values[0])
        elif split == "math_calc":
            list(map(int, values))
    except ValueError as err:
        raise MalformedRecord(f"{split} record {record.get('id')}: answer {record.get('answer')!r} cannot be "
                              f"scored ({err})") from None
