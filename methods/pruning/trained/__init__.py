"""Pruning while training (Table 2's high-cost rows, Table 3's SIMPLE and ZipLM): the shared
schedule, weight masks, structure gates and token dropping, and one module per paper."""
