# Data module: IDX reader, datasets, distributed sampler, loader
# (tests/test_data.c), and scripts/fetch_mnist.sh (tests/test_fetch.sh).
# Both read real MNIST from DG_MNIST_DIR; when it is empty the real-MNIST
# parts are skipped (exit 77) and test_data still runs its synthetic checks.

dg_add_test(test_data test_data.c)
target_link_libraries(test_data PRIVATE ZLIB::ZLIB)   # writes gzip fixtures
set_tests_properties(test_data PROPERTIES SKIP_RETURN_CODE 77 LABELS data)

add_test(NAME test_fetch_mnist
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_fetch.sh
                 ${PROJECT_SOURCE_DIR}/scripts/fetch_mnist.sh "${DG_MNIST_DIR}")
set_tests_properties(test_fetch_mnist PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300 LABELS data)
