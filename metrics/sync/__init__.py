"""Lip-sync metrics: the published LSE-D / LSE-C (`metric`), the suite-trained scorer (`suite`), and
their shared pieces: the SyncNet architecture (`model`), the official scoring core (`lse`), the file
round trips of the official scripts (`inputs`) and the face-tracked crop protocol (`tracked`)."""
