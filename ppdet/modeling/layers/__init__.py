"""Building blocks shared by backbones and heads."""
