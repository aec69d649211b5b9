"""Fine-tune with the gaze-consistency regulariser; the same as ``hf-gazecons train``.

    accelerate launch --multi_gpu --num_processes 2 scripts/train.py --model resnet18 --dataset builtin:shapes \
        --lambda_max 100 --output_dir out
"""

import sys

from hf_gazecons.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
