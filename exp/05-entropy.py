"""05-entropy: predict the entropy change of one policy-gradient step (delta-H1) and check it
against the real step on an independent batch. Usage: 05-entropy.py [MODE] [--config ...]
[--set 05_entropy.KEY=VALUE ...], MODE one of single, batch-scaling, sanity-check, eta-sweep,
exact, debug (default: 05_entropy.mode).

Writes exp/05-entropy/output/<mode>/ (section 05_entropy).
"""

import sys

from rl_onoff.cli import main
from rl_onoff.entropy import mode_argv, run_entropy

if __name__ == "__main__":
    main(__doc__.split("\n\n")[0], run_entropy, mode_argv(sys.argv[1:]), section="05_entropy")
