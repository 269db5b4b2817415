# bfloat16 tensors and CPU autocast (dgrad/amp.h, core/src/amp.c,
# core/src/cpu/gemm_bf16.c). Included from tests/CMakeLists.txt.
#  - bf16: test_bf16: conversions against PyTorch 1.13 bit for bit
#    (fixtures/bf16.txt from fixtures/make_bf16_fixtures.py), the bf16 GEMM
#    (AVX512_BF16 when the CPU has it, and the portable kernel) against
#    double-precision products, linear / matmul / conv2d forward and backward
#    under autocast against torch.autocast("cpu", dtype=torch.bfloat16),
#    bad input, and a short training run whose loss falls;
#  - bf16_portable / bf16_avx512 / bf16_dnnl (DG_HAVE_DNNL builds): the same
#    with DG_BF16_GEMM=portable|avx512|dnnl, so the engine's products
#    (autocast ops, training) run through that kernel (the default is dnnl
#    when built with oneDNN, else avx512 when the CPU has AVX512_BF16).
# bf16_bench (bench/bf16_bench.c) is built here but is not a test.
dg_add_test(test_bf16 test_bf16.c)
target_include_directories(test_bf16 PRIVATE ${PROJECT_SOURCE_DIR}/core/src ${PROJECT_SOURCE_DIR}/core/src/cpu)
set_tests_properties(test_bf16 PROPERTIES TIMEOUT 300)
add_test(NAME test_bf16_portable COMMAND test_bf16)
set_tests_properties(test_bf16_portable PROPERTIES TIMEOUT 300 ENVIRONMENT
  "DG_FIXTURES=${CMAKE_CURRENT_SOURCE_DIR}/fixtures;DG_BF16_GEMM=portable")
add_test(NAME test_bf16_avx512 COMMAND test_bf16)
set_tests_properties(test_bf16_avx512 PROPERTIES TIMEOUT 300 ENVIRONMENT
  "DG_FIXTURES=${CMAKE_CURRENT_SOURCE_DIR}/fixtures;DG_BF16_GEMM=avx512")
if(DG_HAVE_DNNL)
  target_compile_definitions(test_bf16 PRIVATE DG_HAVE_DNNL=1)
  add_test(NAME test_bf16_dnnl COMMAND test_bf16)
  set_tests_properties(test_bf16_dnnl PROPERTIES TIMEOUT 300 ENVIRONMENT
    "DG_FIXTURES=${CMAKE_CURRENT_SOURCE_DIR}/fixtures;DG_BF16_GEMM=dnnl")
endif()
if(EXISTS ${PROJECT_SOURCE_DIR}/bench/bf16_bench.c)
  add_executable(bf16_bench ${PROJECT_SOURCE_DIR}/bench/bf16_bench.c)
  target_link_libraries(bf16_bench PRIVATE dgrad m)
  target_include_directories(bf16_bench PRIVATE ${PROJECT_SOURCE_DIR}/core/src ${PROJECT_SOURCE_DIR}/core/src/cpu)
endif()
