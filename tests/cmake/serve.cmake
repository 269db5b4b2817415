# dgserve (serve/): test_serve.py drives it with curl on 127.0.0.1 only:
# health and metadata, KServe v2 infer and TF Serving predict against
# dgrad-infer's outputs, 4xx errors naming the field, dynamic batching,
# SIGHUP reload under load, 503 + Retry-After on a full queue, SIGTERM
# drain with exit 0. Needs dgserve (libmicrohttpd, jansson), curl, MNIST.
find_program(DG_CURL curl)
find_package(Python3 COMPONENTS Interpreter)
if(TARGET dgserve AND DG_CURL AND DG_MNIST_DIR AND Python3_Interpreter_FOUND)
  add_test(NAME test_serve
           COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/test_serve.py ${PROJECT_BINARY_DIR} ${DG_MNIST_DIR})
  set_tests_properties(test_serve PROPERTIES LABELS serve TIMEOUT 300)
elseif(NOT TARGET dgserve)
  message(STATUS "dgrad tests: test_serve left out (dgserve is not built)")
endif()

# dgserve's request reader on its own (no HTTP, no jansson): numbers read
# as strtod reads them, the fields of v2 and v1 bodies, and every kind of
# bad body naming its field or its line and column.
dg_add_test(test_request test_request.c ${PROJECT_SOURCE_DIR}/serve/request.c)
target_include_directories(test_request PRIVATE ${PROJECT_SOURCE_DIR}/serve)
set_tests_properties(test_request PROPERTIES LABELS serve)

# dgserve under wrk's load with good and bad requests mixed; in the ASan
# build this is the load test under AddressSanitizer (exit 77: no wrk).
if(TARGET dgserve AND DG_CURL AND DG_MNIST_DIR)
  add_test(NAME test_serve_load
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_serve_load.sh ${PROJECT_BINARY_DIR} ${DG_MNIST_DIR})
  set_tests_properties(test_serve_load PROPERTIES LABELS serve TIMEOUT 120 SKIP_RETURN_CODE 77)
endif()
