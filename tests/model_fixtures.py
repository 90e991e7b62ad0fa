"""Random-weight CRNN checkpoints saved exactly as the published best_model.pt is."""

from __future__ import annotations

from pathlib import Path

import torch

from highlightsense.model import CRNN

# inference-notebook name → training-notebook name (SPEC §3)
TRAINING_NAMES = ((".bn.", ".norm."), ("attention.W.", "attn.fc1."), ("attention.V.", "attn.fc2."))


def random_crnn(seed: int = 0) -> CRNN:
    torch.manual_seed(seed)
    model = CRNN()
    # give the batch norms non-trivial running statistics, as a trained model has
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def training_names(state: dict) -> dict:
    renamed = {}
    for key, value in state.items():
        for new, old in TRAINING_NAMES:
            key = key.replace(new, old)
        renamed[key] = value
    return renamed


def save_checkpoint(path: Path, seed: int = 0, naming: str = "inference", epochs: int = 10) -> Path:
    """``{'model': state_dict, 'epochs': int}`` with the chosen state-dict naming."""
    state = random_crnn(seed).state_dict()
    if naming == "training":
        state = training_names(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "epochs": epochs}, path)
    return path
