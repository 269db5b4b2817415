# Data-parallel equivalence tests (comm/src/ddp.c): as a plain process and
# through mpirun with 2, 3 and 4 ranks.
add_executable(test_ddp ${CMAKE_CURRENT_SOURCE_DIR}/ddp/test_ddp.c)
target_link_libraries(test_ddp PRIVATE dgrad_comm m)
set(DG_DDP_TEST_ENV "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;DG_COMM_TIMEOUT=120")
add_test(NAME ddp_plain COMMAND test_ddp)
set_tests_properties(ddp_plain PROPERTIES TIMEOUT 120 ENVIRONMENT "${DG_DDP_TEST_ENV}")

find_program(DG_MPIEXEC NAMES mpiexec mpirun)
if(DG_HAVE_MPI AND DG_MPIEXEC)
  foreach(np 2 3 4)
    add_test(NAME ddp_mpi_np${np}
             COMMAND ${DG_MPIEXEC} --allow-run-as-root --oversubscribe --bind-to none
                     --mca btl self,vader -n ${np} $<TARGET_FILE:test_ddp>)
    set_tests_properties(ddp_mpi_np${np} PROPERTIES TIMEOUT 300 ENVIRONMENT "${DG_DDP_TEST_ENV}")
  endforeach()
endif()
