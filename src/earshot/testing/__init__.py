"""Library code that earshot's fixtures, tests and benchmarks stand on."""
