"""Training: data -> model -> evaluation -> registry, one subpackage per step of the pipeline.

- ``training.data``: the corpus. Source readers, gather, clean (dedup, the split), the chat-log
  export, the grounded-answer data; the seed files the stages read (``training/data/*.jsonl``,
  ``*.txt``) sit next to the code.
- ``training.model``: making a model. Chat format and tokenizer, conversations as tensors, presets,
  the base stage, pretraining and fine-tuning through one loop (checkpoints, DDP/FSDP), preference
  tuning, generation settings, and the message router's classifier.
- ``training.evaluation``: measuring one. The evaluate stage with its metrics and baselines, the
  counterfactual fairness check, the promotion gate, charts.
- ``training.registry``: keeping and replacing one. Versioned model directories (register, promote,
  rollback) and the retraining cycle that ends there.

Shared by all of them, here: ``cli`` (``chatbot train``), ``config`` (typed stage configs) and
``manifest`` (idempotent stage outputs). Nothing is re-exported: importing a package runs no
code, so ``import training`` (or a torch-free module such as ``training.data.sources``) does not
load torch; import from the modules.
"""
