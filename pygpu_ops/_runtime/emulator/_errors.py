"""Exception types of the CUDA emulator."""

__all__ = [
    "EmulatorError", "CompileError", "DeadlockError", "OutOfBoundsError",
    "LaunchError", "KernelError", "KernelNotFoundError",
]


class EmulatorError(RuntimeError):
    """Base class of every error raised by the emulator (except argument
    type errors, which are ``TypeError`` as in CuPy)."""


class CompileError(EmulatorError):
    """g++ rejected the kernel source; the message holds its diagnostics."""


class DeadlockError(EmulatorError):
    """Threads wait at a barrier or warp collective that can never complete
    (or a warp collective is used in a way that is undefined on a GPU)."""


class OutOfBoundsError(EmulatorError):
    """A kernel accessed memory outside a device buffer or outside the
    requested dynamic shared memory."""


class LaunchError(EmulatorError):
    """Invalid launch configuration (grid, block, shared memory)."""


class KernelError(EmulatorError):
    """Any other fault inside a kernel: failed device ``assert``, ``__trap()``,
    integer division by zero, stack overflow."""


class KernelNotFoundError(EmulatorError, KeyError):
    """``get_function`` was asked for a name the module does not have."""

    def __str__(self):  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else ""
