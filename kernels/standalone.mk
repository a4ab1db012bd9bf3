# kernels/standalone.mk -- the kernels-only build: the CUDA tests and the GPU
# benchmark from kernels/ and their own sources, with a C compiler, nvcc,
# cuBLAS and json-c alone (no configure, no FastCGI, curl, inih, PCRE2 or
# OpenSSL). For a machine that has the CUDA toolkit but not the server's
# libraries (the lent GPU machine: tools/gpu-check uses it), and runnable
# anywhere:
#
#   make -f kernels/standalone.mk -j            # into build-kernels/ (O=DIR for another)
#   build-kernels/tests/unit/test_cuda          # TAP; LLMCGI_REQUIRE_GPU=1 makes "no device" a failure
#   build-kernels/tests/unit/test_gpu
#   build-kernels/tests/bench/gpu_bench --help  # what tests/bench/gpu_decode runs
#   build-kernels/tools/gen-gpt2 --help
#
# CUDA=auto (the default) builds the CUDA backend when nvcc is found (PATH or
# /usr/local/cuda/bin); CUDA=0 builds the CPU backend alone, as a
# --without-cuda configure does. CUDA_ARCHS="90" (default "80 89 90") picks
# the SM targets, PTX added for the last, as configure does. WERROR=1 adds
# -Werror. Everything is rebuilt when this file changes.
#
# json-c: the checkpoint and safetensors readers parse config.json and the
# safetensors header with it. Found through pkg-config; else give
# JSONC_CFLAGS=-I.../include JSONC_LIBS=.../libjson-c.a (tools/gpu-check
# points them at the libjson-c-dev that tools/gpu-deps carries, linked
# statically: it needs nothing but libc).

SRC := $(patsubst %/kernels/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
O ?= build-kernels
CC ?= cc
CUDA ?= auto
CUDA_ARCHS ?= 80 89 90

ifeq ($(CUDA),auto)
NVCC ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc))
ifneq ($(NVCC),)
CUDA := 1
else
CUDA := 0
endif
else ifeq ($(CUDA),1)
NVCC ?= $(firstword $(shell command -v nvcc 2>/dev/null) $(wildcard /usr/local/cuda/bin/nvcc))
endif
# make's built-in default for CC is "cc"; the same for NVCC when it was given empty.
ifeq ($(CUDA),1)
ifeq ($(NVCC),)
$(error CUDA=1 but no nvcc in PATH or /usr/local/cuda/bin)
endif
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_LIBDIR ?= $(firstword $(foreach d,lib64 lib targets/x86_64-linux/lib,$(if $(wildcard $(CUDA_HOME)/$(d)/libcudart_static.a),$(CUDA_HOME)/$(d))))
last_arch := $(lastword $(CUDA_ARCHS))
NVCC_ARCH_FLAGS ?= $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
	-gencode arch=compute_$(last_arch),code=compute_$(last_arch)
endif

JSONC_CFLAGS ?= $(shell pkg-config --cflags json-c 2>/dev/null)
JSONC_LIBS ?= $(or $(shell pkg-config --libs json-c 2>/dev/null),-ljson-c)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wno-unused-parameter \
	-Wno-format-truncation -Wvla $(if $(filter 1,$(WERROR)),-Werror)
CFLAGS ?= -O2 -g
ALL_CFLAGS := -std=gnu11 -pthread $(WARN) $(CFLAGS) -I$(O) -I$(SRC)/kernels $(JSONC_CFLAGS) \
	$(if $(filter 1,$(CUDA)),-I$(CUDA_HOME)/include)
NVCC_FLAGS := $(NVCC_ARCH_FLAGS) -O2 -std=c++17 -Xcompiler -Wall,-Wno-format-truncation -I$(O) -I$(SRC)/kernels \
	$(NVCCFLAGS)
LIBS := $(JSONC_LIBS) -lm -pthread
ifeq ($(CUDA),1)
LIBS := -L$(CUDA_LIBDIR) -Wl,-rpath,$(CUDA_LIBDIR) -lcublas -lcudart_static -ldl -lrt -lstdc++ $(LIBS)
endif

# Every source under kernels/ (the library has nothing else there), found rather than listed, so
# that a new kernels/ file cannot be left out of the build the device call depends on; gpu_none.c
# stands in for the CUDA backend when there is no nvcc.
KERNEL_C := $(patsubst $(SRC)/%,%,$(filter-out $(SRC)/kernels/gpu_none.c,\
	$(wildcard $(SRC)/kernels/*.c $(SRC)/kernels/cpu/*.c $(SRC)/kernels/cuda/*.c)))
ifeq ($(CUDA),1)
KERNEL_CU := $(patsubst $(SRC)/%,%,$(wildcard $(SRC)/kernels/cuda/*.cu))
else
KERNEL_C += kernels/gpu_none.c
endif
KERNEL_OBJ := $(addprefix $(O)/,$(KERNEL_C:.c=.o) $(KERNEL_CU:.cu=.o))
GEN_OBJ := $(O)/tools/gen_gpt2_lib.o

PROGRAMS := $(O)/tests/unit/test_cuda $(O)/tests/unit/test_gpu $(O)/tests/bench/gpu_bench $(O)/tools/gen-gpt2

all: $(PROGRAMS)
	@echo "kernels-only build in $(O): CUDA $(if $(filter 1,$(CUDA)),yes ($(NVCC); archs $(CUDA_ARCHS)),no)"

# config.h: what configure would define that these sources read.
$(O)/config.h: $(SRC)/kernels/standalone.mk
	@mkdir -p $(@D)
	@{ echo '/* config.h -- written by kernels/standalone.mk (the kernels-only build) */'; \
	   echo '#ifndef _GNU_SOURCE'; echo '#define _GNU_SOURCE 1'; echo '#endif'; \
	   echo '#define PACKAGE_VERSION "kernels-only"'; \
	   $(if $(filter 1,$(CUDA)),echo '#define HAVE_CUDA 1';) } > $@.tmp && mv $@.tmp $@

$(O)/%.o: $(SRC)/%.c $(O)/config.h $(SRC)/kernels/standalone.mk
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c -o $@ $<

$(O)/%.o: $(SRC)/%.cu $(O)/config.h $(SRC)/kernels/standalone.mk
	@mkdir -p $(@D)
	$(NVCC) $(NVCC_FLAGS) -MMD -MP -c -o $@ $<

$(O)/tests/unit/test_cuda: $(O)/tests/unit/test_cuda.o $(GEN_OBJ) $(KERNEL_OBJ)
	$(CC) -o $@ $^ $(LIBS)
$(O)/tests/unit/test_gpu: $(O)/tests/unit/test_gpu.o $(KERNEL_OBJ)
	$(CC) -o $@ $^ $(LIBS)
$(O)/tests/bench/gpu_bench: $(O)/tests/bench/gpu_bench.o $(KERNEL_OBJ)
	$(CC) -o $@ $^ $(LIBS)
$(O)/tools/gen-gpt2: $(O)/tools/gen-gpt2.o $(GEN_OBJ) $(KERNEL_OBJ)
	$(CC) -o $@ $^ $(LIBS)

clean:
	rm -rf $(O)

.PHONY: all clean
-include $(shell find $(O) -name '*.d' 2>/dev/null)
