"""Post-training backdoor defences as registered methods, each run in rem's setting: D_r as its
"clean" data, contaminated as it really is, or (``clean_subset=true``) a truly clean one — an upper bound.

| name | module | paper |
|---|---|---|
| ``neural-cleanse`` | :mod:`.neural_cleanse` | Wang et al., S&P 2019 |
| ``anp`` | :mod:`.anp` | Wu & Wang, NeurIPS 2021 |
| ``i-bau`` | :mod:`.ibau` | Zeng et al., ICLR 2022 |
| ``fst`` | :mod:`.fst` | Min et al., NeurIPS 2023 |

What they share (their data, the deployed model): :mod:`.common`.
"""

from rem.methods.defences import anp, fst, ibau, neural_cleanse

__all__ = ["anp", "fst", "ibau", "neural_cleanse"]
