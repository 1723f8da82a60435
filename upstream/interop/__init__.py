"""Reading other toolkits' checkpoint files safely, shared by the families that load them: fairseq's
format (:mod:`.fairseq_checkpoint`: HuBERT, wav2vec 2.0, the ``hf`` upstream's WavLM) and S3PRL's
(:mod:`.s3prl_checkpoint`: APC, Mockingjay; ``checkpoint_error``, the one error naming a file). Each
family's own conversion sits in its folder (``apc/s3prl.py``, ``hubert/checkpoints.py``, ...)."""
