"""04-proto: proto-tokens that make a frozen model emit a whole text in one forward pass.

    method     the inputs built from e and m, the forward pass, per-text loss/accuracy
    optimize   AdamW on fp32 vectors: per-text clipping, early stop, best-step keeping
    evaluate   the clean pass with saved vectors: accuracy, first error, probabilities
    sweep      capacity sweep over prefixes on a sqrt(2) grid, warm-started
    targets    which texts: 00's responses (a selection) or texts from the YAML
    plots      training curves, token error map, capacity plot
    pipeline   run_proto: all of it for exp/04-proto.py, files and run record
"""
