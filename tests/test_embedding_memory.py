"""The drop-in module allocates what the documented memory budget says (docs/training.md,
"Memory budget"), with the hot table sized by the popular rows and the cold buffer by the
working set."""

import torch

from sw_driver.embedding import EmbeddingBagConfig, HotlineEmbeddingBagCollection, RowWiseAdagrad
from sw_driver.training.modes import memory_budget


def test_module_allocations_match_the_memory_budget():
    sizes = (500, 1200, 40)
    tables = [EmbeddingBagConfig(f"t{i}", n) for i, n in enumerate(sizes)]
    ebc = HotlineEmbeddingBagCollection(tables, 8, batch_size=32, working_set=2, hot_budget=256,
                                        optimizer=RowWiseAdagrad(lr=0.1), gather_threads=1)
    try:
        g = torch.Generator().manual_seed(3)
        for _ in range(6):                      # rows 0..11 of each table are seen often
            ebc.learn(torch.stack([torch.randint(0, 12, (32,), generator=g)] * 3, 1))
        ebc.freeze()
        width = 8 + 1
        b = memory_budget(sizes, 8, "hotline", batch_size=32, working_set=2, hot_budget=256,
                          state_width=1, cuda=False, hot_rows=ebc.entries)
        assert ebc.entries == ebc.hot_rows == len(ebc.hot.slots) > 0
        assert ebc.entries < ebc.eal_config.entries    # not one slot per EAL entry
        assert b["hot_table"] == ebc.entries * width * 4
        assert b["hot_table"] + b["cold_buffer"] == ebc.working.numel() * 4
        assert b["cold_buffer"] == ebc.cap * width * 4 == 2 * 32 * 3 * width * 4
        assert b["staging_in"] == ebc.pipeline.staging_in.numel() * 4
        assert b["staging_out"] == ebc.pipeline.staging_out.numel() * 4
        assert b["host_table"] == ebc.table.numel() * 4
        assert b["slot_map"] == ebc.dev.slot_map.numel() * ebc.dev.slot_map.element_size()
    finally:
        ebc.close()
