"""MAMMOTH (arXiv 2403.07544): modular multilingual models from named, shared components.

``sharing.py`` (sharing patterns -> component names) -> ``tasks.py`` (the task table: each
direction's components and prompt) -> ``components.py`` (the component bank of layer stacks) ->
``routing.py`` (a batch's examples routed to their tasks) -> ``modular.py`` (``ModularTranslation``)
and ``modular_salm.py`` (``ModularSalmT5``: adapters on a frozen backbone) -> ``component_files.py``
(one file per component in an export) -> ``sync.py`` (pure: placement, holder groups, gradient
sync among a component's holders) -> ``strategy.py`` (``trainer.strategy: component_sync``).
``meta/`` is the meta-config tool (``emmett-config``)."""
