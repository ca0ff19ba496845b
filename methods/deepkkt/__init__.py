"""DeepKKT: Deep Support Vectors (Lee et al., NeurIPS 2024) as a benchmark method."""
