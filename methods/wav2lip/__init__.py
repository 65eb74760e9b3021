"""Wav2Lip (Prajwal et al., ACM MM 2020), faithful to Rudrabha/Wav2Lip @ 5c90fa9.

models      the generator, expert SyncNet_color and quality discriminator (official state-dict layout)
checkpoint  official checkpoint files: strict loading (module. prefix stripped), saving, resume
weights     WeightSpecs of the official files (never downloaded)
inference   the official inference data flow as pure pieces (boxes, crops, masking, mel windows, paste)
data        training crops and the official samplers of both stages
train       stage 1 (expert) and stage 2 (generator + quality discriminator), resumable
method      the `Wav2LipMethod` adapter (registered as "wav2lip")

Only `method` is imported by the registry, and it imports torch lazily. See docs/wav2lip.md.
"""
