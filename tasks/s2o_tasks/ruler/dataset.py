"""lm-eval's ``custom_dataset`` hook of every RULER task (the task named by the YAML's ``dataset_kwargs``).

lm-eval calls it with the task's metadata as keywords: the contract of ``s2o_tasks.common``
(tokenizer, max_seq_length, num_samples, seed, data_dir, template_overhead) plus its own keys
(version, config_source), which are ignored.
"""

from __future__ import annotations

from s2o_tasks.ruler.generate import DEFAULT_SAMPLES, DEFAULT_SEED, build_docs


def load_dataset(task: str, *, tokenizer=None, pretrained=None, max_seq_length=None, num_samples=DEFAULT_SAMPLES,
                 seed=DEFAULT_SEED, data_dir=None, template_overhead=0, **_lm_eval_keys):
    """``{"test": datasets.Dataset}`` of ``task``'s documents (see ``generate.build_docs``).

    ``pretrained`` (lm-eval's model argument) stands in for a missing ``tokenizer``.
    """
    import datasets

    if max_seq_length is None:
        raise ValueError("RULER tasks need metadata max_seq_length=<tokens> (prompt + generation)")
    docs = build_docs(task, tokenizer=tokenizer or pretrained, max_seq_length=int(max_seq_length),
                      num_samples=num_samples,
                      seed=DEFAULT_SEED if seed is None else int(seed), data_dir=data_dir,
                      template_overhead=template_overhead)
    return {"test": datasets.Dataset.from_list(docs)}
