# cmake --install, then find_package(dgrad) and pkg-config from outside the tree.
if(NOT DG_SANITIZE)  # an outside program is not built with the sanitizers
find_program(DG_MPIEXEC NAMES mpiexec mpirun)
set(dg_install_mpi "")
if(DG_HAVE_MPI AND DG_MPIEXEC)
  set(dg_install_mpi ${DG_MPIEXEC})
endif()
add_test(NAME install_consumer
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_install.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR}
                 ${dg_install_mpi})
set_tests_properties(install_consumer PROPERTIES TIMEOUT 300)
endif()
