"""Audio features aligned to 25 fps frame indices: Wav2Lip mel, HuBERT, f0."""
