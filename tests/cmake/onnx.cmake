# ONNX and inference (dgrad/onnx.h, dgrad/infer.h): test_onnx (PyTorch's
# exported files import and match PyTorch; dgrad's export round-trips; bad
# files and shapes; threads sharing a model; no allocation in steady state)
# and test_onnx_ort (onnx.checker and onnxruntime on the files dgrad-export
# writes for the trained example nets; needs MNIST, installs onnx and
# onnxruntime with pip when missing, skips only when pip cannot reach the
# index). Without protobuf-c ONNX files cannot be read: both are left out.
if(DG_HAVE_PROTOBUF)
  dg_add_test(test_onnx test_onnx.c)
  set_tests_properties(test_onnx PROPERTIES SKIP_RETURN_CODE 77 LABELS onnx TIMEOUT 120)

  find_package(Python3 COMPONENTS Interpreter)
  if(DG_MNIST_DIR AND Python3_Interpreter_FOUND)
    add_test(NAME test_onnx_ort
             COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_onnx_ort.py
                     ${PROJECT_BINARY_DIR} ${DG_MNIST_DIR})
    set_tests_properties(test_onnx_ort PROPERTIES SKIP_RETURN_CODE 77 LABELS onnx TIMEOUT 600)
  endif()
endif()
