"""Cost models, prices, budgets, the reservation ledger and usage."""
