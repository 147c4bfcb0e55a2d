"""Transfer evaluation: adversarial examples (and their clean originals) through codecs and rooms,
scored by every target model."""
