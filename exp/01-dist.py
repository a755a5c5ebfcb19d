"""01-dist: exact per-token entropy and top-k distributions of 00's sampled responses.

    python exp/01-dist.py [--config experiment_config.yaml] [--set 01_dist.KEY=VALUE ...]

Reads exp/00-sample/output/results.json; writes exp/01-dist/output/distributions.json,
distributions.npz and PNG plots (section 01_dist).
"""

from rl_onoff.cli import main
from rl_onoff.distributions import run_dist

if __name__ == "__main__":
    main(__doc__.splitlines()[0], run_dist, section="01_dist")
