"""04-proto: proto-tokens that make a frozen model emit a whole text in one forward pass.

    config     the 04_proto section of the YAML
    method     the inputs built from e and m, the forward pass, per-text loss/accuracy
    optimize   AdamW on fp32 vectors: early stop (exact or plateau), step cap, best step kept
    evaluate   the clean pass with saved vectors: accuracy, first error, bits; [mem] greedy
    baseline   the no-memory prior: accuracy, cross-entropy, token and information gain
    sweep      capacity: independent restarts per length, sqrt(2) grid then bisection
    analysis   cosine of vectors across texts, interpolation between two restarts
    targets    which texts: 00's responses (a selection), texts from the YAML, random controls
    plots      training curves, token error map, capacity, capacity against model size
    pipeline   run_proto: all of it for exp/04-proto.py, per model, files and run record
"""
