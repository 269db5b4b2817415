# ZeRO stage 1 (comm/src/zero.c, dgrad/zero.h). Included from tests/CMakeLists.txt.
#  - zero_plain, zero_mpi_np{2,3}: test_zero: 300 steps against DDP + dg_optim
#    (SGD, SGD nesterov, Adam amsgrad, AdamW) within 1e-6, the optimizer
#    state per rank (ceil(N/world) * slots floats), models of 1 and 12 floats,
#    bad input;
#  - zero_ckpt_save_np2 (fixture), zero_ckpt_resume_np{2,3}: a checkpoint
#    written from shards at 2 ranks, resumed at 2 (bitwise equal to the
#    uninterrupted run) and at 3 (within 1e-6 of unsharded DDP resumed from
#    the same file). Needs protobuf-c, as every checkpoint.
# zero_bench (bench/zero_bench.c) is built here but is not a test.
add_executable(test_zero ${CMAKE_CURRENT_SOURCE_DIR}/zero/test_zero.c)
target_link_libraries(test_zero PRIVATE dgrad_comm m)
add_executable(zero_bench ${PROJECT_SOURCE_DIR}/bench/zero_bench.c)
target_link_libraries(zero_bench PRIVATE dgrad_comm m)

set(DG_ZERO_TEST_ENV "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;DG_COMM_TIMEOUT=120")
if(DG_SANITIZE)
  set(DG_ZERO_TEST_TIMEOUT 600)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/lsan.supp)
    list(APPEND DG_ZERO_TEST_ENV
      "OMPI_MCA_mca_base_component_disable_dlclose=1"
      "LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_SOURCE_DIR}/lsan.supp:fast_unwind_on_malloc=0")
  endif()
else()
  set(DG_ZERO_TEST_TIMEOUT 300)
endif()

add_test(NAME zero_plain COMMAND test_zero)
set_tests_properties(zero_plain PROPERTIES TIMEOUT ${DG_ZERO_TEST_TIMEOUT} ENVIRONMENT "${DG_ZERO_TEST_ENV}")

find_program(DG_MPIEXEC NAMES mpiexec mpirun)
if(NOT (DG_HAVE_MPI AND DG_MPIEXEC))
  return()
endif()
set(_dg_zero_mpirun ${DG_MPIEXEC} --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader)
foreach(np 2 3)
  add_test(NAME zero_mpi_np${np} COMMAND ${_dg_zero_mpirun} -n ${np} $<TARGET_FILE:test_zero>)
  set_tests_properties(zero_mpi_np${np} PROPERTIES TIMEOUT ${DG_ZERO_TEST_TIMEOUT} PROCESSORS ${np}
                       ENVIRONMENT "${DG_ZERO_TEST_ENV}")
endforeach()

if(DG_HAVE_PROTOBUF)
  set(_dg_zero_dir ${CMAKE_CURRENT_BINARY_DIR}/zero_ckpt)
  add_test(NAME zero_ckpt_clean COMMAND ${CMAKE_COMMAND} -E rm -rf ${_dg_zero_dir})
  set_tests_properties(zero_ckpt_clean PROPERTIES FIXTURES_SETUP zero_ckpt_clean)
  add_test(NAME zero_ckpt_save_np2 COMMAND ${_dg_zero_mpirun} -n 2 $<TARGET_FILE:test_zero> save ${_dg_zero_dir})
  set_tests_properties(zero_ckpt_save_np2 PROPERTIES TIMEOUT ${DG_ZERO_TEST_TIMEOUT} PROCESSORS 2
                       ENVIRONMENT "${DG_ZERO_TEST_ENV}" FIXTURES_REQUIRED zero_ckpt_clean
                       FIXTURES_SETUP zero_ckpt)
  foreach(np 2 3)
    add_test(NAME zero_ckpt_resume_np${np}
             COMMAND ${_dg_zero_mpirun} -n ${np} $<TARGET_FILE:test_zero> resume ${_dg_zero_dir})
    set_tests_properties(zero_ckpt_resume_np${np} PROPERTIES TIMEOUT ${DG_ZERO_TEST_TIMEOUT} PROCESSORS ${np}
                         ENVIRONMENT "${DG_ZERO_TEST_ENV}" FIXTURES_REQUIRED zero_ckpt)
  endforeach()
endif()

# The trainer's --zero, as a user runs it (tests/test_zero_train.sh): the
# same params_hash as DDP at 2 ranks, half the state, exact resume from
# sharded checkpoints, resumed at 1 rank, flags it refuses.
find_program(DG_MPIEXEC NAMES mpiexec mpirun)
if(DG_HAVE_PROTOBUF AND DG_MNIST_DIR AND DG_HAVE_MPI AND DG_MPIEXEC)
  add_test(NAME mnist_mlp_zero
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_zero_train.sh $<TARGET_FILE:mnist_mlp> ${DG_MNIST_DIR}
                   ${DG_MPIEXEC} --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader)
  set_tests_properties(mnist_mlp_zero PROPERTIES TIMEOUT 600 ENVIRONMENT "${DG_ZERO_TEST_ENV}"
                       PASS_REGULAR_EXPRESSION "test_zero_train: passed" FAIL_REGULAR_EXPRESSION "FAIL")
endif()
