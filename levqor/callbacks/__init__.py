"""Callbacks: the outbox written with each terminal state change, signed delivery with retries, and
the guard that keeps outbound requests on the public internet (CONTRACT.md §8)."""
