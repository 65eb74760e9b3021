"""Published reference numbers, kept as data (CSV) with their sources."""
