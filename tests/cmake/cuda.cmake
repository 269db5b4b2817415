# CUDA backend tests. test_cuda (every op forward and backward, optimizers,
# MNIST MLP training, against the CPU backend) is registered only when the
# build has CUDA and a GPU answers at configure time; a machine without a GPU
# instead checks that dg_ctx_new(DG_CUDA) and mnist_mlp --device cuda fail
# cleanly. A missing GPU never fails or skips the CPU tests.
# DG_TEST_CUDA=ON/OFF overrides the probe (AUTO: probe).
set(DG_TEST_CUDA AUTO CACHE STRING "Register the GPU tests (ON/OFF/AUTO: if a GPU answers)")

add_executable(test_cuda test_cuda.c)
target_link_libraries(test_cuda PRIVATE dgrad_comm m)
target_include_directories(test_cuda PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
# The same comparisons CPU against CPU (every build): the harness, the bad
# label and label-range cases, and the MLP against a 1-ulp perturbed start.
add_test(NAME test_cuda_self_check COMMAND test_cuda --self-check)
set_tests_properties(test_cuda_self_check PROPERTIES ENVIRONMENT "DG_MNIST_DIR=${DG_MNIST_DIR}")

# cuBLAS is opened on demand, not linked: a CPU context must not map it, and
# the loader must find it and its symbols (no GPU needed).
if(DG_HAVE_CUDA)
  dg_add_test(test_cublas_load test_cublas_load.c)
endif()

set(DG_GPU_PRESENT OFF)
if(DG_HAVE_CUDA AND DG_TEST_CUDA STREQUAL "AUTO")
  # A tiny program that asks the CUDA runtime for devices: the same question
  # the backend asks (a driver without a GPU, or no driver, answers 0).
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    set(probe ${CMAKE_CURRENT_BINARY_DIR}/dg_gpu_probe.c)
    file(WRITE ${probe} [=[
#include <stdio.h>
#include <cuda_runtime_api.h>
int main(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) n = 0;
    printf("%d", n);
    return n > 0 ? 0 : 1;
}
]=])
    try_run(dg_probe_rc dg_probe_compiled ${CMAKE_CURRENT_BINARY_DIR}/dg_gpu_probe ${probe}
            CMAKE_FLAGS "-DINCLUDE_DIRECTORIES=${CUDAToolkit_INCLUDE_DIRS}"
            LINK_LIBRARIES CUDA::cudart
            COMPILE_OUTPUT_VARIABLE dg_probe_log
            RUN_OUTPUT_VARIABLE dg_probe_out)
    if(dg_probe_compiled AND dg_probe_rc EQUAL 0)
      set(DG_GPU_PRESENT ON)
    endif()
  endif()
  message(STATUS "dgrad tests: CUDA devices visible: ${DG_GPU_PRESENT} (${dg_probe_out})")
elseif(DG_HAVE_CUDA AND DG_TEST_CUDA)
  set(DG_GPU_PRESENT ON)
endif()

if(DG_GPU_PRESENT)
  add_test(NAME test_cuda COMMAND test_cuda)
  set_tests_properties(test_cuda PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77
    ENVIRONMENT "DG_MNIST_DIR=${DG_MNIST_DIR}")
else()
  # no GPU (or no CUDA in this build): a clean error, and the CPU still works
  add_test(NAME cuda_unavailable COMMAND test_cuda --expect-no-device)
  file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/mnist_mlp_no_cuda.sh [=[
# mnist_mlp --device cuda without a usable GPU: exit 1, one line on stderr
out=$("$1" --device cuda --data "$2" --epochs 1 2>&1 >/dev/null); rc=$?
echo "rc=$rc: $out"
[ "$rc" = 1 ] && [ "$(printf '%s\n' "$out" | wc -l)" = 1 ] || exit 1
case "$out" in *cuda*|*CUDA*) ;; *) exit 1 ;; esac
out=$("$1" --device tpu 2>&1); rc=$?
echo "rc=$rc: $out"
[ "$rc" = 2 ] && case "$out" in *"'tpu'"*) exit 0 ;; esac
exit 1
]=])
  if(DG_MNIST_DIR)
    add_test(NAME mnist_mlp_no_cuda
             COMMAND sh ${CMAKE_CURRENT_BINARY_DIR}/mnist_mlp_no_cuda.sh $<TARGET_FILE:mnist_mlp> ${DG_MNIST_DIR})
  endif()
endif()

# Bad CUDA settings in the environment: named, with or without a GPU.
if(DG_HAVE_CUDA AND DG_MNIST_DIR)
  add_test(NAME cuda_bad_env
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/test_cuda_env.sh $<TARGET_FILE:mnist_mlp> ${DG_MNIST_DIR})
endif()

# test_nccl (the nccl communicator, DDP on a GPU with NCCL and through
# pinned host memory) and test_cuda_graph (whole-step CUDA graphs, the
# pinned batch loader): registered like test_cuda. Without a GPU they
# check that the nccl communicator and graphs are refused cleanly.
foreach(t test_nccl test_cuda_graph)
  add_executable(${t} ${t}.c)
  target_link_libraries(${t} PRIVATE dgrad_comm m)
  target_include_directories(${t} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
endforeach()
if(DG_GPU_PRESENT)
  foreach(t test_nccl test_cuda_graph)
    add_test(NAME ${t} COMMAND ${t})
    set_tests_properties(${t} PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77)
  endforeach()
else()
  add_test(NAME nccl_unavailable COMMAND test_nccl --expect-no-device)
  add_test(NAME cuda_graph_unavailable COMMAND test_cuda_graph --expect-no-device)
endif()
