# dg_gemm_small, the CPU backend's own small-matrix SGEMM, against a naive
# double-precision product. It is internal, so the test compiles it in.
dg_add_test(test_gemm test_gemm.c ../core/src/cpu/gemm_cpu.c)
target_include_directories(test_gemm PRIVATE ${PROJECT_SOURCE_DIR}/core/src ${PROJECT_SOURCE_DIR}/core/src/cpu)
