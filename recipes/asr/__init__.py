"""Low-resource ASR: ``python -m recipes.asr.low_resource`` (a wrapper over the benchmark) and the ASR recipes."""
