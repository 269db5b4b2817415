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

# DDP over a graph that changes per step and per rank: a branch some ranks
# skip, a layer no rank uses, uneven work (tests/ddp/test_ddp_unused.c).
add_executable(test_ddp_unused ${CMAKE_CURRENT_SOURCE_DIR}/ddp/test_ddp_unused.c)
target_link_libraries(test_ddp_unused PRIVATE dgrad_comm m)
add_test(NAME ddp_unused_plain COMMAND test_ddp_unused)
set_tests_properties(ddp_unused_plain PROPERTIES TIMEOUT 120 ENVIRONMENT "${DG_DDP_TEST_ENV}")
if(DG_HAVE_MPI AND DG_MPIEXEC)
  foreach(np 2 3)
    add_test(NAME ddp_unused_np${np}
             COMMAND ${DG_MPIEXEC} --allow-run-as-root --oversubscribe --bind-to none
                     --mca btl self,vader -n ${np} $<TARGET_FILE:test_ddp_unused>)
    set_tests_properties(ddp_unused_np${np} PROPERTIES TIMEOUT 300 ENVIRONMENT "${DG_DDP_TEST_ENV}")
  endforeach()
  # Uneven inputs: the last rank stops a step early; the others end with the
  # communicator's timeout error (3 s here), and the job ends (non-zero).
  add_test(NAME ddp_uneven_np2
           COMMAND ${DG_MPIEXEC} --allow-run-as-root --oversubscribe --bind-to none
                   --mca btl self,vader -n 2 $<TARGET_FILE:test_ddp_unused> --uneven)
  set_tests_properties(ddp_uneven_np2 PROPERTIES TIMEOUT 60 ENVIRONMENT "${DG_DDP_TEST_ENV}"
    PASS_REGULAR_EXPRESSION "rank 0: the step the last rank never took: dg_comm_[a-z]*: timed out after 3 s"
    FAIL_REGULAR_EXPRESSION "FAIL")
endif()

# examples/mnist_vit's ViT with LayerDrop (p 0.5): the ranks skip different
# blocks; gradients = the average of the ranks' own, replicas agree.
add_executable(test_ddp_vit ${CMAKE_CURRENT_SOURCE_DIR}/ddp/test_ddp_vit.c
                            ${PROJECT_SOURCE_DIR}/examples/vit.c)
target_link_libraries(test_ddp_vit PRIVATE dgrad_comm m)
add_test(NAME ddp_vit_plain COMMAND test_ddp_vit)
set_tests_properties(ddp_vit_plain PROPERTIES TIMEOUT 120 ENVIRONMENT "${DG_DDP_TEST_ENV}")
if(DG_HAVE_MPI AND DG_MPIEXEC)
  foreach(np 2 3)
    add_test(NAME ddp_vit_np${np}
             COMMAND ${DG_MPIEXEC} --allow-run-as-root --oversubscribe --bind-to none
                     --mca btl self,vader -n ${np} $<TARGET_FILE:test_ddp_vit>)
    set_tests_properties(ddp_vit_np${np} PROPERTIES TIMEOUT 300 ENVIRONMENT "${DG_DDP_TEST_ENV}"
      PASS_REGULAR_EXPRESSION "passed on ${np} ranks" FAIL_REGULAR_EXPRESSION "FAIL")
  endforeach()
endif()

# bfloat16 gradient all-reduce (DG_COMM_BF16, dg_ddp_opts.bf16_compress):
# the reduced gradients against the rule written out, replicas agree.
add_executable(test_ddp_bf16 ${CMAKE_CURRENT_SOURCE_DIR}/ddp/test_ddp_bf16.c)
target_link_libraries(test_ddp_bf16 PRIVATE dgrad_comm m)
add_test(NAME ddp_bf16_plain COMMAND test_ddp_bf16)
set_tests_properties(ddp_bf16_plain PROPERTIES TIMEOUT 120 ENVIRONMENT "${DG_DDP_TEST_ENV}"
  PASS_REGULAR_EXPRESSION "passed on 1 ranks" FAIL_REGULAR_EXPRESSION "FAIL")
if(DG_HAVE_MPI AND DG_MPIEXEC)
  foreach(np 2 3)
    add_test(NAME ddp_bf16_np${np}
             COMMAND ${DG_MPIEXEC} --allow-run-as-root --oversubscribe --bind-to none
                     --mca btl self,vader -n ${np} $<TARGET_FILE:test_ddp_bf16>)
    set_tests_properties(ddp_bf16_np${np} PROPERTIES TIMEOUT 300 ENVIRONMENT "${DG_DDP_TEST_ENV}"
      PASS_REGULAR_EXPRESSION "passed on ${np} ranks" FAIL_REGULAR_EXPRESSION "FAIL")
  endforeach()
endif()
