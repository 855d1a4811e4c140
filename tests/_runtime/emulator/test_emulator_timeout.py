"""The emulator's watchdog (``set_timeout``): a launch that overruns fails with
a KernelError on any thread, every time, and never crashes the process.

The launches run in a subprocess, so that a crash (the timer signal jumping to
an unset jump buffer was a SIGSEGV on the first launch of a process) is a test
failure with the exit status, not a lost test run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pygpu_ops
from pygpu_ops._runtime import emulator as emu

ROOT = str(Path(pygpu_ops.__file__).resolve().parent.parent)

SCRIPT = r'''
import os, sys, threading
import numpy as np
import pygpu_ops as po
from pygpu_ops._runtime import emulator as emu

if os.environ.get("PYGPU_OPS_EMU_TIMEOUT") is None:
    emu.set_timeout(1e-6)
assert emu.get_timeout() == 1e-6, emu.get_timeout()
x = np.linspace(-2, 2, 1000, dtype=np.float32)
results = []

def relu_times_out(tag):
    # the first launch of the process is this one (on the main thread)
    try:
        po.relu(x, backend="emulator")
    except emu.KernelError as e:
        assert "timeout of 1e-06 s" in str(e) or "did not finish within 1e-06 s" in str(e), e
        results.append(("relu", tag))
    else:
        raise AssertionError(f"{tag}: relu finished within 1 microsecond?")

SPIN = emu.RawModule(code="""
extern "C" __global__ void spin(int* flag) {
    while (*(volatile int*)flag == 0) {
    }
}""", name="spin.cu").get_function("spin")
flag = emu.to_device(np.zeros(1, np.int32))

def spin_times_out(tag):
    # a kernel that never ends: only the signal can stop it
    try:
        SPIN(1, 64, (flag,))
    except emu.KernelError as e:
        assert "did not finish within 1e-06 s" in str(e), e
        results.append(("spin", tag))
    else:
        raise AssertionError(f"{tag}: spin returned")

def on_thread(fn, tag):
    errors = []
    def body():
        try:
            fn(tag)
        except BaseException as e:
            errors.append(e)
    t = threading.Thread(target=body)
    t.start()
    t.join()
    if errors:
        raise errors[0]

N = 8
for i in range(N):
    relu_times_out(f"main {i}")
    spin_times_out(f"main {i}")
for i in range(N):
    on_thread(relu_times_out, f"thread {i}")
    on_thread(spin_times_out, f"thread {i}")
    relu_times_out(f"main after thread {i}")
assert len(results) == 5 * N, results

emu.set_timeout(None)
ref = np.maximum(x, 0)
np.testing.assert_array_equal(po.relu(x, backend="emulator"), ref)
out = []
t = threading.Thread(target=lambda: out.append(po.relu(x, backend="emulator")))
t.start(); t.join()
np.testing.assert_array_equal(out[0], ref)
flag[0] = 1
SPIN(1, 64, (flag,))
print("OK", len(results))
'''


def _run(env_timeout):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("PYGPU_OPS_EMU_TIMEOUT", None)
    if env_timeout:
        env["PYGPU_OPS_EMU_TIMEOUT"] = env_timeout
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("how", ["set_timeout", "env"])
def test_tiny_timeout_raises_on_every_thread_every_time(how):
    p = _run("1e-6" if how == "env" else None)
    assert p.returncode == 0, (
        f"exit status {p.returncode} (negative: killed by signal {-p.returncode})\n"
        f"stdout:\n{p.stdout}\nstderr:\n{p.stderr[-4000:]}")
    assert p.stdout.split() == ["OK", "40"], p.stdout


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_set_timeout_rejects_non_positive_and_non_finite(bad):
    old = emu.get_timeout()
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds > 0"):
        emu.set_timeout(bad)
    assert emu.get_timeout() == old


@pytest.mark.parametrize("bad", ["1", True, [1]])
def test_set_timeout_rejects_non_numbers(bad):
    with pytest.raises(TypeError, match="timeout must be a number of seconds or None"):
        emu.set_timeout(bad)


@pytest.mark.parametrize("value", ["abc", "-1", "0"])
def test_bad_timeout_environment_variable(value):
    env = {**os.environ, "PYTHONPATH": ROOT, "PYGPU_OPS_EMU_TIMEOUT": value}
    p = subprocess.run([sys.executable, "-c", "from pygpu_ops._runtime import emulator"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "ValueError: PYGPU_OPS_EMU_TIMEOUT must be" in p.stderr, \
        p.stderr


PRINTF_SCRIPT = r'''
import sys, threading
import numpy as np
from pygpu_ops._runtime import emulator as emu
f = emu.RawModule(code=r"""
#include <cstdio>
extern "C" __global__ void spin_printf(int* flag, int n) {
    while (*(volatile int*)flag == 0) printf("%d %f %s\n", n, 1.5, "abcdefghijklmnopqrstuvwxyz");
}""", name="spin_printf.cu").get_function("spin_printf")
flag = emu.to_device(np.zeros(1, np.int32))
done = emu.to_device(np.ones(1, np.int32))
n = []

def spin():
    try:
        f(1, 32, (flag, np.int32(3)))
    except emu.KernelError:
        n.append(1)

for i in range(200):
    emu.set_timeout(0.01)
    t = threading.Thread(target=spin)
    t.start()
    t.join()
    emu.set_timeout(None)
    # another thread's launch: it prints and flushes stdout, so it waits
    # forever if the timed-out launch left the stdout lock taken
    f(1, 1, (done, np.int32(3)))
print("timeouts", len(n), file=sys.stderr)
'''


def test_timeout_while_the_kernel_is_inside_printf():
    """A kernel that spends its time in printf (libc, holding the stdout lock)
    times out on one thread: the watchdog must not jump out of libc, or the
    next printf/fflush on another thread waits forever."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("PYGPU_OPS_EMU_TIMEOUT", None)
    try:
        p = subprocess.run([sys.executable, "-c", PRINTF_SCRIPT], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the process hung after a timeout inside printf (stdout lock left taken)")
    assert p.returncode == 0, f"exit status {p.returncode}\n{p.stderr[-4000:]}"
    assert p.stderr.split()[-2:] == ["timeouts", "200"], p.stderr
