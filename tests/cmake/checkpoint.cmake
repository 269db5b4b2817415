# Checkpoints (dgrad/checkpoint.h): the API and bad input (test_checkpoint),
# a write killed by SIGKILL (test_checkpoint_kill.sh), and mnist_mlp's
# --checkpoint-dir/--resume/--max-steps (test_checkpoint_resume.sh): exact
# resume at 1 and 2 ranks, resume at another world size, bad checkpoints.
# Without protobuf-c the checkpoint functions fail, and these are skipped.
# DG_FUZZ=ON with clang builds libFuzzer targets (scripts/fuzz.sh).
if(DG_HAVE_PROTOBUF)
  dg_add_test(test_checkpoint test_checkpoint.c)
  set_tests_properties(test_checkpoint PROPERTIES SKIP_RETURN_CODE 77 LABELS checkpoint)

  add_executable(ckpt_writer ckpt_writer.c)
  target_link_libraries(ckpt_writer PRIVATE dgrad_comm m)
  add_test(NAME test_checkpoint_kill
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_checkpoint_kill.sh $<TARGET_FILE:ckpt_writer>)
  set_tests_properties(test_checkpoint_kill PROPERTIES TIMEOUT 120 LABELS checkpoint)

  if(DG_MNIST_DIR)
    find_program(DG_MPIEXEC NAMES mpiexec mpirun)
    set(dg_ckpt_mpi "")
    if(DG_HAVE_MPI AND DG_MPIEXEC)
      set(dg_ckpt_mpi ${DG_MPIEXEC} --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader)
    endif()
    add_test(NAME test_checkpoint_resume
             COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_checkpoint_resume.sh $<TARGET_FILE:mnist_mlp>
                     ${DG_MNIST_DIR} $<TARGET_FILE:ckpt_writer> ${dg_ckpt_mpi})
    set_tests_properties(test_checkpoint_resume PROPERTIES TIMEOUT 600 LABELS checkpoint
                         ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
  endif()
endif()

option(DG_FUZZ "Build the libFuzzer targets fuzz_checkpoint and fuzz_idx (clang only)" OFF)
if(DG_FUZZ AND CMAKE_C_COMPILER_ID MATCHES "Clang")
  foreach(target fuzz_checkpoint fuzz_idx)
    add_executable(${target} fuzz/${target}.c)
    target_link_libraries(${target} PRIVATE dgrad_comm m)
    target_compile_options(${target} PRIVATE -fsanitize=fuzzer,address)
    target_link_options(${target} PRIVATE -fsanitize=fuzzer,address)
  endforeach()
  if(TARGET dgserve)   # dgserve's request reader (serve/request.c)
    add_executable(fuzz_request fuzz/fuzz_request.c ${PROJECT_SOURCE_DIR}/serve/request.c)
    target_include_directories(fuzz_request PRIVATE ${PROJECT_SOURCE_DIR}/serve)
    target_link_libraries(fuzz_request PRIVATE dgrad)
    target_compile_options(fuzz_request PRIVATE -fsanitize=fuzzer,address)
    target_link_options(fuzz_request PRIVATE -fsanitize=fuzzer,address)
  endif()
elseif(DG_FUZZ)
  message(WARNING "DG_FUZZ=ON needs clang (CMAKE_C_COMPILER=clang); no fuzz targets built")
endif()
