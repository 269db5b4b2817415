# The examples, run as a user would.
add_test(NAME mnist_mlp_bad_input
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_cli.sh $<TARGET_FILE:mnist_mlp> "${DG_MNIST_DIR}")
if(DG_MNIST_DIR)
  add_test(NAME mnist_mlp_one_epoch
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_mnist.sh $<TARGET_FILE:mnist_mlp> ${DG_MNIST_DIR} 0.85 1)
  set_tests_properties(mnist_mlp_one_epoch PROPERTIES TIMEOUT 600)
  find_program(DG_MPIEXEC NAMES mpiexec mpirun)
  if(DG_HAVE_MPI AND DG_MPIEXEC)
    foreach(np 2 4)
      add_test(NAME mnist_mlp_mpi_np${np}
               COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_mnist.sh $<TARGET_FILE:mnist_mlp> ${DG_MNIST_DIR} 0.75 ${np}
                       ${DG_MPIEXEC} --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader -n ${np})
      set_tests_properties(mnist_mlp_mpi_np${np} PROPERTIES TIMEOUT 600
                           ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
    endforeach()
    # gradients all-reduced as bfloat16 (--bf16-allreduce): learns as well
    add_test(NAME mnist_mlp_bf16_allreduce_np2
             COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_mnist.sh $<TARGET_FILE:mnist_mlp> ${DG_MNIST_DIR} 0.75 2
                     ${DG_MPIEXEC} --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader -n 2)
    set_tests_properties(mnist_mlp_bf16_allreduce_np2 PROPERTIES TIMEOUT 600
                         ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;DG_TEST_FLAGS=--bf16-allreduce")
  endif()
endif()

# Under Slurm (srun --mpi=pmix), when slurm-wlm and munge are installed.
find_program(DG_SRUN srun)
find_program(DG_SLURMCTLD slurmctld PATHS /usr/sbin)
find_program(DG_MUNGED munged PATHS /usr/sbin)
if(DG_MNIST_DIR AND DG_HAVE_MPI AND DG_MPIEXEC AND DG_SRUN AND DG_SLURMCTLD AND DG_MUNGED)
  add_test(NAME mnist_mlp_srun
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_srun.sh $<TARGET_FILE:mnist_mlp> ${DG_MNIST_DIR}
                   ${PROJECT_SOURCE_DIR} ${DG_MPIEXEC})
  set_tests_properties(mnist_mlp_srun PROPERTIES TIMEOUT 600 RUN_SERIAL TRUE
                       ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
endif()
