"""The web process (no torch; `tests/test_layout.py` checks it): the Gradio page (`page`, its one state
object `state.PageState`, one module per tab: compare, lab, webcam, your images, analysis), its figures
(`plots`), what it says about checkpoints (`catalog`), `client.ModelProcess` (the ModelHost that runs the
models in their own process), and `launch` (an app on a free port, for the tests and benchmarks)."""
