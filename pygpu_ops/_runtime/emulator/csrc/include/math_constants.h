/* pygpu_ops emulator stub: everything this header provides is defined by
   pygpuemu_prelude.h, which is included before the kernel source. */
#pragma once
