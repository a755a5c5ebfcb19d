"""04-proto: learn two vectors from which the frozen model emits a whole text in one pass.

    python exp/04-proto.py [--config experiment_config.yaml] [--set 04_proto.KEY=VALUE ...]

Reads 00's responses (exp/00-sample/output) or `04_proto.texts`; writes proto.npz,
texts.json, summary.json and plots to exp/04-proto/output (section 04_proto).
"""

from rl_onoff.cli import main
from rl_onoff.proto.pipeline import run_proto

if __name__ == "__main__":
    main(__doc__.splitlines()[0], run_proto, section="04_proto")
