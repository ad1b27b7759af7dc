"""ExecuTorch's import-time and lowering noise kept out of mbuild's output (its own module: lowering,
running and reading programs all use it, and none of them should import the others for it)."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile


@contextlib.contextmanager
def quiet():
    """Keep ExecuTorch's import-time and lowering noise (Python and C++ alike) out of our output.

    torchao prints missing CUDA kernels, the C++ runtime logs CPU probing to file descriptor 2 and
    the Vulkan partitioner logs through the root logger; the reporter says what happened instead.
    """
    import sys
    import warnings

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            logging.disable(logging.NOTSET)
