"""The model process (torch): `host.LocalModels` (the ModelHost over loaded checkpoints), `worker` (the
process the dashboard starts), `batching` (concurrent requests' forward passes together), `lab` (the
Robustness lab and live webcam), `gallery` (where two models disagree)."""
