"""00-sample: sample responses on a math dataset, score them, print statistics.

    python exp/00-sample.py [--config experiment_config.yaml] [--set 00_sample.KEY=VALUE ...]

Writes exp/00-sample/output/results.json and statistics.json (section 00_sample).
"""

from rl_onoff.cli import main
from rl_onoff.sample.run import run_sample

if __name__ == "__main__":
    main(__doc__.splitlines()[0], run_sample, section="00_sample")
