"""autonn tests share a small CPU with other work: one thread keeps them fast and deterministic."""

import torch

torch.set_num_threads(1)
