"""Making a model: format, tokens, tensors, and the stages that train weights.

- ``chat_format``: the project's chat tokens and template; ``tokenizer``: the BPE tokenizer stage
- ``chat_formats``: our chat tokens or a base's own template, and loading any version with its format
- ``encoding``: conversations as training tensors (rendering, loss masks, windows, packing);
  ``template_data``: the same through a pretrained base's own chat template
- ``presets``: model sizes; ``base``: a pretrained checkpoint on disk as a base model
- ``pretrain``, ``finetune``: the stages, both through ``loop`` (the training loop; exact resume
  with ``checkpoint``, DDP/FSDP); ``preference``: DPO and KTO from chat feedback
- ``generation``: generation settings shipped with a model and batched reply generation
- ``router``: fits the message router's classifier (``core/knowledge/router.json``)

Modules here import torch; this ``__init__`` imports nothing.
"""
