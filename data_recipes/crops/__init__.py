"""Crops: Wav2Lip face boxes and 96x96 crops (`wav2lip`), stable 512x512 head crops (`head`)."""
