"""The engines users already run, driven by parasample's uniforms: transformers (a
``LogitsProcessor``), vLLM (a V1 logits processor) and Ray (distributed sweeps). Each module
imports its engine lazily, so parasample works without any of them; a missing one is reported
with its install command."""
