"""The small training set-up shared by the exactness, re-learning, checkpoint and distributed
tests: five tables from 3 to 5000 rows, dim 8, tiny MLPs, working sets of three 32-input
mini-batches, and skewed synthetic data whose cold rows recur in consecutive working sets."""

from sw_driver.data import SyntheticClickGenerator

SIZES = (3, 40, 200, 1000, 5000)
HOT_BUDGET = 256
KW = dict(dim=8, bottom=(16,), top=(16,), lr=0.1, batch_size=32, working_set=3,
          sample_rate=0.1, seed=0, gather_threads=2)


def small_click_data(n=1200, seed=3):
    """``n`` samples with popular inputs (hot heads of 8 rows) and many recurring cold rows."""
    return SyntheticClickGenerator(SIZES, p_hot=0.6, head_rows=8, n_dense=4, seed=seed).batch(n)
