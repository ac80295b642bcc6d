"""Factorized tensors: matrix product states (tensor trains), Tucker and CP."""
