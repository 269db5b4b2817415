# The CPU kernels' vectorizable exp, tanh, sigmoid and erf (core/src/cpu/vmath.h)
# against double-precision libm. Header-only and internal, so the test includes it.
dg_add_test(test_vmath test_vmath.c)
target_include_directories(test_vmath PRIVATE ${PROJECT_SOURCE_DIR}/core/src ${PROJECT_SOURCE_DIR}/core/src/cpu)
