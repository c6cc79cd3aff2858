"""``python -m openseer`` with DDP's gradient re-striding switched off (openseer.train.parallel's
``grads_in_parameter_strides``): the control run of ``scaling.py --restride``, whose channels-last 1x1 kernels
then get gradients in other strides than DDP's buckets, as before the re-striding."""

import sys

import openseer.train.parallel as parallel
from openseer.cli import main

parallel.grads_in_parameter_strides = lambda model: 0

if __name__ == "__main__":
    sys.exit(main())
