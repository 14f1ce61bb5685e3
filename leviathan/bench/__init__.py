"""Benchmarks: `python -m leviathan.bench {throughput,data,lev}`."""
