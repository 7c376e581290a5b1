"""loraleak: how much a LoRA fine-tuned language model leaks membership of its fine-tuning data.

Pipeline, one module per step: models -> data -> finetune -> scoring -> attacks -> metrics -> report,
with config, experiment (stages, cache, resume) and cli around them.
"""

__version__ = "0.1.0"
