"""Representation transfer: can one waveform perturbation fool every input representation, even one it
was never crafted on? Ensemble and feature-space attacks, scored leave-one-representation-out."""
