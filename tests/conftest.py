"""Suite-wide settings: one torch thread per test process.

The suite runs under pytest-xdist on 2 cores; several multi-threaded torch processes on
2 cores oversubscribe the CPU and slow every tensor op by orders of magnitude.
"""

import torch

torch.set_num_threads(1)
