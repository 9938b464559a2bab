"""The web process (no torch; `tests/test_layout.py` checks it): the Gradio page (`page`, one module per
tab), its figures (`plots`), what it says about checkpoints (`catalog`), and `client.ModelProcess`, the
ModelHost that runs the models in their own process."""
