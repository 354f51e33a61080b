"""What MGCM needs of a model, as protocols owned here: ``models/`` sits above ``mgcm/`` and
implements them (``TranslationModel``, a LightningModule, does), so that nothing here imports it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from nemo_emmett.parts.loss import BatchLoss


class Backward(Protocol):
    """Runs a backward pass (Lightning's ``manual_backward``: precision plugins scale the loss)."""

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None: ...


class MGCMModel(Backward, Protocol):
    """A LightningModule under manual optimization whose step :class:`~nemo_emmett.mgcm.step.MGCMStep` runs."""

    @property
    def trainer(self) -> Any:
        """The Lightning trainer: ``strategy``, ``precision_plugin``, ``log_every_n_steps``."""
        ...

    @property
    def global_step(self) -> int: ...

    def batch_loss(self, batch: Any) -> BatchLoss:
        """The batch's loss per example (split into task shares by MGCM)."""
        ...

    def log_training(self, batch: Any, loss: torch.Tensor, per_task: dict[str, torch.Tensor]) -> None: ...

    def optimizers(self) -> Any: ...

    def lr_schedulers(self) -> Any: ...

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None: ...

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Parameter]]: ...

    def clip_gradients(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                       gradient_clip_algorithm: str | None = None) -> None: ...


@runtime_checkable
class ModularModel(Backward, Protocol):
    """What the synchronised path (``mgcm/sync.py``) needs besides: which component owns each parameter
    and which components a task's examples run (MAMMOTH's ``ModularTranslation``)."""

    def named_parameters(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Parameter]]: ...

    def component_of(self) -> dict[str, str]:
        """Parameter name -> its component."""
        ...

    def components_reached(self, batch: Any, task: str) -> set[str]:
        """The components that the batch's examples of ``task`` run."""
        ...
