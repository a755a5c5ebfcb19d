"""00-sample: sample responses on a math dataset, score them, statistics with intervals."""
