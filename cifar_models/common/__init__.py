"""Torch-free pieces that both serving processes share, and the only ones (with `dashboard/`) that the
dashboard's web process may import (`tests/test_layout.py` checks it):

    hosts             the ModelHost interface between the page and its models
    meta, reports     the owners of the two saved formats: NAME.json and NAME.eval.json
    images            decoding uploads and webcam frames, with limits
    limits, memory    what an upload, a session, a queue may take; memory handed back after bursts
    corruption_specs  the corruptions' names, titles and severities (the pixels: eval/corruptions.py)
    user_images, user_results, stats   Your images: a folder or ZIP read safely, the run in chunks and its
                      figures and CSV, Wilson intervals and McNemar's exact test
    errors, files     the user's mistakes as types; atomic writes, sha256
"""
