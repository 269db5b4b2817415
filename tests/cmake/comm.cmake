# Tests of the communicator (comm/). Included from tests/CMakeLists.txt.
#  - comm_local, comm_plain, comm_mpi_singleton: test_comm as a plain process
#    (world of one; "local", automatic choice, MPI singleton);
#  - comm_mpi_np{1..4}: test_comm through mpirun;
#  - comm_fault_*: test_comm_fault through mpirun, with one rank failing,
#    under tests/comm/run_fault.sh (an outer `timeout` guard).
set(DG_COMM_TEST_DIR ${CMAKE_CURRENT_SOURCE_DIR}/comm)
# Seconds per test; sanitized builds of 4 oversubscribed ranks are slow.
if(DG_SANITIZE)
  set(DG_COMM_TEST_TIMEOUT 300)
else()
  set(DG_COMM_TEST_TIMEOUT 120)
endif()

add_executable(test_comm ${DG_COMM_TEST_DIR}/test_comm.c)
target_link_libraries(test_comm PRIVATE dgrad_comm)
add_executable(test_comm_fault ${DG_COMM_TEST_DIR}/test_comm_fault.c)
target_link_libraries(test_comm_fault PRIVATE dgrad_comm)
if(DG_HAVE_MPI)
  target_compile_definitions(test_comm PRIVATE DG_TEST_HAVE_MPI=1)
endif()

# Root-friendly Open MPI: these tests may run as root in containers.
set(DG_COMM_TEST_ENV
  "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
# Under DG_SANITIZE, ignore leaks inside Open MPI and friends: keep its
# plugins loaded (else their frames show as "<unknown module>") and unwind
# slowly (else frames stop at libc's vasprintf) so lsan.supp can match.
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/lsan.supp)
  list(APPEND DG_COMM_TEST_ENV
    "OMPI_MCA_mca_base_component_disable_dlclose=1"
    "LSAN_OPTIONS=suppressions=${CMAKE_CURRENT_SOURCE_DIR}/lsan.supp:fast_unwind_on_malloc=0")
endif()

add_test(NAME comm_local COMMAND test_comm --backend local --expect-size 1)
add_test(NAME comm_plain COMMAND test_comm --expect-size 1)
set_tests_properties(comm_local comm_plain PROPERTIES
  TIMEOUT ${DG_COMM_TEST_TIMEOUT} ENVIRONMENT "${DG_COMM_TEST_ENV};DG_COMM_TIMEOUT=60")

if(NOT DG_HAVE_MPI)
  return()
endif()

add_test(NAME comm_mpi_singleton COMMAND test_comm --backend mpi --expect-size 1)
set_tests_properties(comm_mpi_singleton PROPERTIES
  TIMEOUT ${DG_COMM_TEST_TIMEOUT} ENVIRONMENT "${DG_COMM_TEST_ENV};DG_COMM_TIMEOUT=60")

if(NOT MPIEXEC_EXECUTABLE)
  find_program(MPIEXEC_EXECUTABLE NAMES mpiexec mpirun)
endif()
if(NOT MPIEXEC_EXECUTABLE)
  message(STATUS "dgrad tests: no mpiexec, skipping the multi-rank comm tests")
  return()
endif()
if(NOT MPIEXEC_NUMPROC_FLAG)
  set(MPIEXEC_NUMPROC_FLAG -n)
endif()

execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version
                OUTPUT_VARIABLE _dg_mpiexec_version ERROR_QUIET)
if(_dg_mpiexec_version MATCHES "Open MPI|OpenRTE")
  set(_dg_mpiexec_default --allow-run-as-root --oversubscribe --bind-to none
                          --mca btl self,vader)
  set(_dg_is_openmpi ON)
else()
  set(_dg_mpiexec_default "")
  set(_dg_is_openmpi OFF)
endif()
set(DG_TEST_MPIEXEC_FLAGS "${_dg_mpiexec_default}" CACHE STRING
    "Flags for mpiexec in the tests (a ;-list)")
set(_dg_mpirun ${MPIEXEC_EXECUTABLE} ${MPIEXEC_PREFLAGS} ${DG_TEST_MPIEXEC_FLAGS})

foreach(np 1 2 3 4)
  add_test(NAME comm_mpi_np${np}
           COMMAND ${_dg_mpirun} ${MPIEXEC_NUMPROC_FLAG} ${np}
                   $<TARGET_FILE:test_comm> --backend mpi --expect-size ${np})
  set_tests_properties(comm_mpi_np${np} PROPERTIES
    TIMEOUT ${DG_COMM_TEST_TIMEOUT} PROCESSORS ${np}
    ENVIRONMENT "${DG_COMM_TEST_ENV};DG_COMM_TIMEOUT=60")
endforeach()

# Fault tests: 3 ranks, rank 1 fails at step 3; survivors time out after 5 s.
find_program(DG_TIMEOUT_PROGRAM timeout)
if(NOT DG_TIMEOUT_PROGRAM)
  message(STATUS "dgrad tests: no `timeout` program, skipping the comm fault tests")
  return()
endif()
set(_dg_fault ${CMAKE_CURRENT_SOURCE_DIR}/comm/run_fault.sh)
set(_dg_survivor "^rank [02]: FAILED: dg_comm_allreduce: ")
# name  want-nonzero  pattern  min-matches  extra-mpirun-flags  mode
function(dg_comm_fault_test name nonzero pattern min extra mode)
  add_test(NAME comm_fault_${name}
           COMMAND sh ${_dg_fault} 90 ${nonzero} "${pattern}" ${min} --
                   ${_dg_mpirun} ${extra} ${MPIEXEC_NUMPROC_FLAG} 3
                   $<TARGET_FILE:test_comm_fault> ${mode})
  set_tests_properties(comm_fault_${name} PROPERTIES
    TIMEOUT 120 PROCESSORS 3
    ENVIRONMENT "${DG_COMM_TEST_ENV};DG_COMM_TIMEOUT=5;DG_COMM_BACKEND=mpi")
endfunction()
# Control: no fault, all three ranks finish.
dg_comm_fault_test(none 0 "^rank [012]: all 6 steps ok" 3 "" none)
# A hung rank: the survivors' waits time out, they exit non-zero, and
# mpirun then ends the job (and the hung rank).
dg_comm_fault_test(hang 1 "${_dg_survivor}timed out after 5 s waiting for ranks" 2 "" hang)
# SIGKILL / exit(1) mid-collective: mpirun ends the whole job at once.
dg_comm_fault_test(kill 1 "signal 9|Killed" 1 "" kill)
dg_comm_fault_test(exit 1 "non-zero status|Exit code" 1 "" exit)
if(_dg_is_openmpi)
  # With --enable-recovery mpirun keeps the survivors running (like srun
  # without --kill-on-bad-exit); they must fail on their own, by timeout or
  # MPI error. (Open MPI 4.1's mpirun then exits 0 whatever the ranks
  # return, so only the survivors' messages are checked.)
  dg_comm_fault_test(kill_recovery 0 "${_dg_survivor}" 2 "--enable-recovery" kill)
  dg_comm_fault_test(exit_recovery 0 "${_dg_survivor}" 2 "--enable-recovery" exit)
endif()
