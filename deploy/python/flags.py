"""Command-line value types shared by the deploy predictor and tools/quantize.py."""
import argparse


def str2bool(text):
    """``True`` / ``False`` as PaddleDetection's deploy scripts spell them (also 1/0, yes/no)."""
    if text.lower() in ('true', '1', 'yes'):
        return True
    if text.lower() in ('false', '0', 'no'):
        return False
    raise argparse.ArgumentTypeError(f'expected True or False, got {text!r}')
