# "See training": TensorBoard summaries, the progress display, the timeline
# and the plots. Included from tests/CMakeLists.txt.
#  - test_summary, test_progress, test_timeline: the modules, in C;
#  - summary_tensorboard: TensorBoard's own readers on test_summary's file,
#    only where DG_TB_PYTHON (default: python3) can import tensorboard;
#  - see_progress, see_logdir, see_timeline_mpi_np2, see_plot: tests/test_see.sh
#    on examples/mnist_mlp and scripts/plot.sh.
dg_add_test(test_summary test_summary.c)
if(DG_HAVE_PROTOBUF)
  target_compile_definitions(test_summary PRIVATE DG_TEST_HAVE_PROTOBUF=1)
endif()
dg_add_test(test_progress test_progress.c)
dg_add_test(test_timeline test_timeline.c)

find_program(DG_PYTHON3 NAMES python3)
set(DG_TB_PYTHON "${DG_PYTHON3}" CACHE FILEPATH "python3 with the tensorboard package (summary_tensorboard)")
if(DG_HAVE_PROTOBUF AND DG_TB_PYTHON)
  execute_process(COMMAND ${DG_TB_PYTHON} -c "import tensorboard"
                  RESULT_VARIABLE _dg_tb_rc OUTPUT_QUIET ERROR_QUIET)
  if(_dg_tb_rc EQUAL 0)
    add_test(NAME summary_tensorboard
             COMMAND ${DG_TB_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/test_summary_tb.py $<TARGET_FILE:test_summary>)
    set_tests_properties(summary_tensorboard PROPERTIES TIMEOUT 300)
  else()
    message(STATUS "dgrad tests: ${DG_TB_PYTHON} cannot import tensorboard, skipping summary_tensorboard")
  endif()
endif()

set(_dg_see ${CMAKE_CURRENT_SOURCE_DIR}/test_see.sh)
if(DG_MNIST_DIR)
  add_test(NAME see_progress COMMAND bash ${_dg_see} progress $<TARGET_FILE:mnist_mlp> ${DG_MNIST_DIR})
  set_tests_properties(see_progress PROPERTIES TIMEOUT 600)
  if(DG_HAVE_PROTOBUF AND DG_PYTHON3)
    add_test(NAME see_logdir COMMAND bash ${_dg_see} logdir $<TARGET_FILE:mnist_mlp> ${DG_MNIST_DIR} ${DG_PYTHON3})
    set_tests_properties(see_logdir PROPERTIES TIMEOUT 600)
  endif()
  find_program(DG_MPIEXEC NAMES mpiexec mpirun)
  if(DG_HAVE_MPI AND DG_MPIEXEC AND DG_HAVE_PROTOBUF AND DG_PYTHON3)
    add_test(NAME see_timeline_mpi_np2
             COMMAND bash ${_dg_see} timeline $<TARGET_FILE:mnist_mlp> ${DG_MNIST_DIR} ${DG_PYTHON3}
                     ${DG_MPIEXEC} --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader)
    set_tests_properties(see_timeline_mpi_np2 PROPERTIES TIMEOUT 600 PROCESSORS 2
                         ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
  endif()
endif()

find_program(DG_GNUPLOT NAMES gnuplot)
if(DG_HAVE_PROTOBUF AND DG_PYTHON3 AND DG_GNUPLOT)
  add_test(NAME see_plot COMMAND bash ${_dg_see} plot $<TARGET_FILE:test_summary> ${DG_PYTHON3})
else()
  message(STATUS "dgrad tests: no gnuplot (or python3, protobuf-c), skipping see_plot")
endif()
