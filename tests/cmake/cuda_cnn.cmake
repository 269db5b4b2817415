# CUDA kernels of convolutional nets against the CPU backend. Included after
# cuda.cmake (the glob is sorted), whose GPU probe sets DG_GPU_PRESENT: the
# test is registered only when a GPU answers; it is always built.
add_executable(test_cnn_cuda test_cnn_cuda.c)
target_link_libraries(test_cnn_cuda PRIVATE dgrad_comm m)
target_include_directories(test_cnn_cuda PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
add_test(NAME test_cnn_cuda_self_check COMMAND test_cnn_cuda --self-check)
if(DG_GPU_PRESENT)
  add_test(NAME test_cnn_cuda COMMAND test_cnn_cuda)
  set_tests_properties(test_cnn_cuda PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77)
endif()
