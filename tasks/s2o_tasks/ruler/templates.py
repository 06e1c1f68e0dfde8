"""RULER's prompt wording: task templates and answer prefixes, as the benchmark defines them.

These strings are the benchmark's protocol (NVIDIA/RULER, ``scripts/data/synthetic/constants.py``),
written out here so that prompts match the official ones word for word. RULER appends the answer
prefix (with a leading space) to the prompt; we keep it apart as ``gen_prefix`` (no leading space)
so that lm-eval puts it at the start of the model's turn, which is where the official scripts put it
when a chat template is used, and joins it with one space otherwise (the same text as RULER's).
"""

# NIAH with several answers (multi-value, multi-query). ``type_needle_v`` is plural: "numbers".
NIAH_MULTI = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
NIAH_MULTI_PREFIX = "The special magic {type_needle_v} for {query} mentioned in the provided text are"

# NIAH with one answer: RULER derives this wording from the one above by replacing "Some" -> "A",
# "are all" -> "is", "are" -> "is", and uses the singular ``type_needle_v`` ("number", "uuid").
NIAH_SINGLE = (
    "A special magic {type_needle_v} is hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What is the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
NIAH_SINGLE_PREFIX = "The special magic {type_needle_v} for {query} mentioned in the provided text is"

# Each needle, and each line of the needle haystack; ``type_needle_v`` is always plural here.
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."

# The noise haystack, repeated.
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."

VT = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
    "{context}\nQuestion: Find all variables that are assigned the value {query} in the text above."
)
# The trailing space is RULER's: the model continues right after it.
VT_PREFIX = (
    "Answer: According to the chain(s) of variable assignment in the text above, "
    "{num_v} variables are assigned the value {query}, they are: "
)

CWE = (
    "Below is a numbered list of words. In these words, some appear more often than others. "
    "Memorize the ones that appear most often.\n{context}\n"
    "Question: What are the 10 most common words in the above list?"
)
CWE_PREFIX = "Answer: The top 10 words that appear most often in the list are:"

FWE = (
    "Read the following coded text and track the frequency of each coded word. "
    "Find the three most frequently appeared coded words. {context}\n"
    "Question: Do not provide any explanation. Please ignore the dots '....'. "
    "What are the three most frequently appeared words in the above coded text?"
)
FWE_PREFIX = "Answer: According to the coded text above, the three most frequently appeared words are:"

QA = (
    "Answer the question based on the given documents. Only give me the answer and do not output any "
    "other words.\n\nThe following are given documents.\n\n{context}\n\n"
    "Answer the question based on the given documents. Only give me the answer and do not output any "
    "other words.\n\nQuestion: {query}"
)
QA_PREFIX = "Answer:"
QA_DOCUMENT = "Document {i}:\n{document}"


def join_prompt(text: str, gen_prefix: str) -> str:
    """The prompt as lm-eval sends it without a chat template: RULER's ``input + " " + answer_prefix``."""
    if not gen_prefix:
        return text
    if text and not (text[-1].isspace() or gen_prefix[0].isspace()):
        return f"{text} {gen_prefix}"
    return text + gen_prefix
