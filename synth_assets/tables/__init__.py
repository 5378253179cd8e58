"""From sources to reporting tables to the wide table, and back again (decompose)."""
