"""Shared test helpers: start real processes on free local ports and wait for them."""
