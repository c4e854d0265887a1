"""Run by test_engine_train under paddle.distributed.launch: train, then dump this rank's
weights so the test can compare the ranks."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import train  # noqa: E402


def main():
    out = sys.argv[1]
    trainer = train.main(sys.argv[2:])
    import paddle.distributed as dist
    state = {k: v.numpy() for k, v in trainer.model.state_dict().items()}
    np.savez(os.path.join(out, f'rank{dist.get_rank()}.npz'), **state)


if __name__ == '__main__':
    main()
