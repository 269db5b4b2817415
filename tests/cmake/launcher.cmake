# Tests of launcher/dgrun. Included from tests/CMakeLists.txt.
#  - launcher_cli: bad input, --help, --dry-run, the rank environment, restarts;
#  - launcher_slurm: sbatch + dgrun on a private Slurm (slurm-wlm, munge, MPI);
#    launcher_slurm_kill: a rank killed mid-job, dgrun resumes in the allocation;
#    launcher_slurm_preempt: scancel --signal=USR1 --batch, checkpoint, requeue;
#    launcher_slurm_timelimit: --time=2 --signal=USR1@90 to the steps, requeued
#    attempts until done;
#  - launcher_multihost*: two ranks in two network namespaces (root, ip netns):
#    same params_hash as one host, and faults (SIGKILL, link down) followed by
#    a restart from the checkpoint.
set(DG_DGRUN ${PROJECT_SOURCE_DIR}/launcher/dgrun)
set(DG_LAUNCHER_TEST_DIR ${CMAKE_CURRENT_SOURCE_DIR}/launcher)
set(DG_LAUNCHER_ENV "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;SLURM_JOB_ID=")
find_program(DG_LAUNCHER_MPIRUN NAMES mpirun mpiexec)

add_test(NAME launcher_cli COMMAND bash ${DG_LAUNCHER_TEST_DIR}/test_cli.sh ${DG_DGRUN})
set_tests_properties(launcher_cli PROPERTIES TIMEOUT 120 ENVIRONMENT "${DG_LAUNCHER_ENV}")

if(NOT DG_MNIST_DIR OR NOT DG_HAVE_MPI OR NOT DG_LAUNCHER_MPIRUN)
  return()
endif()

find_program(DG_LAUNCHER_SBATCH sbatch)
find_program(DG_LAUNCHER_SLURMCTLD slurmctld PATHS /usr/sbin)
find_program(DG_LAUNCHER_MUNGED munged PATHS /usr/sbin)
if(DG_LAUNCHER_SBATCH AND DG_LAUNCHER_SLURMCTLD AND DG_LAUNCHER_MUNGED)
  add_test(NAME launcher_slurm
           COMMAND bash ${DG_LAUNCHER_TEST_DIR}/test_slurm.sh submit $<TARGET_FILE:mnist_mlp>
                   ${DG_MNIST_DIR} ${PROJECT_SOURCE_DIR})
  add_test(NAME launcher_slurm_kill
           COMMAND bash ${DG_LAUNCHER_TEST_DIR}/test_slurm.sh kill $<TARGET_FILE:mnist_mlp>
                   ${DG_MNIST_DIR} ${PROJECT_SOURCE_DIR})
  add_test(NAME launcher_slurm_preempt
           COMMAND bash ${DG_LAUNCHER_TEST_DIR}/test_slurm.sh preempt $<TARGET_FILE:mnist_mlp>
                   ${DG_MNIST_DIR} ${PROJECT_SOURCE_DIR})
  set_tests_properties(launcher_slurm launcher_slurm_kill launcher_slurm_preempt
                       PROPERTIES TIMEOUT 600 RUN_SERIAL TRUE
                       ENVIRONMENT "${DG_LAUNCHER_ENV}")
  # Minutes of waiting on Slurm's timers: in the plain build only, not again
  # under the sanitizers.
  if(NOT DG_SANITIZE)
    add_test(NAME launcher_slurm_timelimit
             COMMAND bash ${DG_LAUNCHER_TEST_DIR}/test_slurm.sh timelimit $<TARGET_FILE:mnist_mlp>
                     ${DG_MNIST_DIR} ${PROJECT_SOURCE_DIR})
    set_tests_properties(launcher_slurm_timelimit PROPERTIES TIMEOUT 600 RUN_SERIAL TRUE
                         ENVIRONMENT "${DG_LAUNCHER_ENV}")
  endif()
endif()

# Preemption, full and read-only disks, non-finite steps, logging failures,
# a slow rank (tests/launcher/test_faults.sh; mounts need root: exit 77 skips).
foreach(mode preempt preempt1 full readonly removed nonfinite logfail slow)
  add_test(NAME faults_${mode}
           COMMAND bash ${DG_LAUNCHER_TEST_DIR}/test_faults.sh ${mode} $<TARGET_FILE:mnist_mlp>
                   ${DG_MNIST_DIR} ${PROJECT_SOURCE_DIR})
  set_tests_properties(faults_${mode} PROPERTIES TIMEOUT 300 RUN_SERIAL TRUE SKIP_RETURN_CODE 77
                       ENVIRONMENT "${DG_LAUNCHER_ENV}")
endforeach()

# Multi-host: needs root and working `ip netns` (checked at configure time).
execute_process(COMMAND id -u OUTPUT_VARIABLE _dg_uid OUTPUT_STRIP_TRAILING_WHITESPACE)
set(_dg_netns_ok OFF)
if(_dg_uid STREQUAL "0")
  execute_process(COMMAND ip netns list RESULT_VARIABLE _dg_netns_rc OUTPUT_QUIET ERROR_QUIET)
  if(_dg_netns_rc EQUAL 0)
    set(_dg_netns_ok ON)
  endif()
endif()
if(NOT _dg_netns_ok)
  message(STATUS "dgrad tests: not root or no `ip netns`, skipping the multi-host launcher tests")
  return()
endif()
foreach(mode same kill linkdown)
  add_test(NAME launcher_multihost_${mode}
           COMMAND bash ${DG_LAUNCHER_TEST_DIR}/test_multihost.sh ${mode} $<TARGET_FILE:mnist_mlp>
                   ${DG_MNIST_DIR} ${PROJECT_SOURCE_DIR})
  set_tests_properties(launcher_multihost_${mode} PROPERTIES TIMEOUT 600 RUN_SERIAL TRUE
                       SKIP_RETURN_CODE 77 ENVIRONMENT "${DG_LAUNCHER_ENV}")
endforeach()
