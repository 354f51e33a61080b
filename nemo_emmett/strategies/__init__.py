"""Lightning strategies; importing the package registers ``trainer.strategy: component_sync``."""

from nemo_emmett.strategies.component_sync import ComponentSyncStrategy

__all__ = ["ComponentSyncStrategy"]
