"""Measuring: head-to-head backend benchmarks, latency sweeps, roofline, reference tables, op traces."""
