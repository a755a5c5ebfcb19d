"""03-tree-search: maximum-entropy tree search against its controls at equal token budget.

    python exp/03-tree-search.py [--config experiment_config.yaml] [--set 03_tree_search.KEY=VALUE ...]

Controls in every run: the same tree reward-blind (lambda -> 0), plain and prefix-shared
sampling. Writes exp/03-tree-search/output/results.json, rollouts.jsonl, summary.json (95%
bootstrap intervals) and accuracy_vs_lambda.png (section 03_tree_search).
"""

from rl_onoff.cli import main
from rl_onoff.search.run import run_tree_search

if __name__ == "__main__":
    main(__doc__.splitlines()[0], run_tree_search, section="03_tree_search")
