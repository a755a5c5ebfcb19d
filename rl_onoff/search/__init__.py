"""03-tree-search: maximum-entropy tree search over token decoding (Diffusion Tree Sampling).

    tree      nodes, soft-value backup, Boltzmann walk (pure Python)
    dts       one selection/expansion/rollout/backup iteration over many trees
    kv        the model as a policy: batched rollouts sharing cached keys/values
    rewards   r(y) through the reward registry; which numbers are oracle
    baseline  greedy and the sampling pool (tokens counted all, or distinct prefixes once)
    metrics   per-question values of the tree and its controls at equal budget; votes
    intervals 95% bootstrap over questions and seeds, paired differences
    plots     accuracy vs lambda with intervals
    run       the stage: models x seeds x settings, files, tracking
"""
