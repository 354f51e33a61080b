"""Plain ``nn.Module`` building blocks: ``perception.py`` (NeMo speech encoder + modality adapter),
``cross_attention.py`` (BESTOW), ``transformer.py`` (layer stacks with a KV cache), ``adapters.py``
(bottleneck adapters), ``hf_backbone.py`` (Hugging Face models from local folders), ``streaming.py``
(the speech perception on audio as it arrives)."""
