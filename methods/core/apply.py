"""Apply a method of any kind to a model: the one place that dispatches on the method's kind."""
from __future__ import annotations

import torch
from torch import nn

from methods.core import engine
from methods.core.base import LayerwiseMethod, Method, ModelMethod, TrainedMethod, TrainingInputs
from methods.core.calibration import CalibrationData


def apply_method(method: Method, model: nn.Module, family, calib: CalibrationData | None, device: torch.device,
                 batch_size: int = 8, progress: bool = True,
                 training: TrainingInputs | None = None) -> tuple[nn.Module, dict[str, float]]:
    """Compress `model` with `method`; returns the (possibly new) model and the seconds of the
    method's own phases (layer-wise: capture, plan, blocks)."""
    if method.needs_calibration and calib is None:
        raise ValueError(f"method '{method.name}' needs calibration data")
    if isinstance(method, LayerwiseMethod):
        return model, engine.compress(model, family, method, calib, device, batch_size, progress)
    if isinstance(method, ModelMethod):
        return method.compress_model(model, family, calib, device, batch_size), {}
    if isinstance(method, TrainedMethod):
        if training is None:
            raise ValueError(f"method '{method.name}' trains, and needs a trainer and training batches")
        return method.compress_trained(model, family, training, device), {}
    raise TypeError(f"method '{method.name}' is of no known kind (LayerwiseMethod, ModelMethod, TrainedMethod)")
