"""Tasks turn raw records into prompt/response examples; `split` makes the member / non-member /
population split and its manifest; `encoding` tokenizes examples for training and scoring."""

from .encoding import Encoded, encode_examples, right_pad, token_batches
from .example import Example, LoadedTask, TaskError
from .split import SPLITS, Split, dedup, make_split, read_manifest, shift_check, write_manifest
from .tasks import TASKS, Task, get_task, load_task, register_task

__all__ = [
    "Encoded",
    "encode_examples",
    "right_pad",
    "token_batches",
    "SPLITS",
    "Split",
    "dedup",
    "make_split",
    "read_manifest",
    "shift_check",
    "write_manifest",
    "TASKS",
    "Example",
    "LoadedTask",
    "Task",
    "TaskError",
    "get_task",
    "load_task",
    "register_task",
]
