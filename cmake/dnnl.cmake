# oneDNN for the bf16 GEMM (core/src/cpu/gemm_dnnl.c), DG_WITH_DNNL
# ON/OFF/AUTO. Included from the top CMakeLists.txt after core/: links
# libdnnl into dgrad and defines DG_HAVE_DNNL. Debian's libdnnl is built
# with OpenMP, so dgrad also links the OpenMP runtime's library (not
# -fopenmp: no pragma in dgrad changes) to set oneDNN's thread count.
set(DG_HAVE_DNNL OFF)
if(NOT DG_WITH_DNNL STREQUAL "OFF")
  find_path(DNNL_INCLUDE_DIR NAMES dnnl.h PATH_SUFFIXES oneapi/dnnl)
  find_library(DNNL_LIBRARY NAMES dnnl)
  find_package(OpenMP COMPONENTS C QUIET)
  if(DNNL_INCLUDE_DIR AND DNNL_LIBRARY AND OpenMP_C_FOUND)
    set(DG_HAVE_DNNL ON)
    target_include_directories(dgrad PRIVATE ${DNNL_INCLUDE_DIR})
    target_compile_definitions(dgrad PRIVATE DG_HAVE_DNNL=1)
    target_link_libraries(dgrad PRIVATE ${DNNL_LIBRARY} ${OpenMP_C_LIBRARIES})
  elseif(DG_WITH_DNNL STREQUAL "ON")
    message(FATAL_ERROR "DG_WITH_DNNL=ON but oneDNN (dnnl.h, libdnnl) or OpenMP was not found")
  endif()
endif()
message(STATUS "dgrad: oneDNN (bf16 GEMM)=${DG_HAVE_DNNL}")
