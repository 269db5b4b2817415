# Convolutional nets: conv2d, pooling, dropout, batch norm, schedulers and
# gradient clipping against PyTorch fixtures (tests/fixtures/cnn.txt, from
# make_cnn_fixtures.py) and finite differences.
dg_add_test(test_cnn_ref test_cnn_ref.c)
dg_add_test(test_cnn_gradcheck test_cnn_gradcheck.c)
# The example on a subset (a full epoch on one thread takes about a minute):
# the first 10240 images, one thread; the loss falls and test accuracy >= 93%.
if(DG_MNIST_DIR)
  add_test(NAME mnist_cnn_subset
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_mnist_cnn.sh $<TARGET_FILE:mnist_cnn> ${DG_MNIST_DIR} 10240 0.93)
  set_tests_properties(mnist_cnn_subset PROPERTIES TIMEOUT 300)
endif()
# Under mpirun with DDP (2 ranks): it learns, the replicas agree, and a
# checkpointed run resumes exactly (batch-norm buffers included).
if(DG_MNIST_DIR AND DG_HAVE_MPI AND DG_HAVE_PROTOBUF)
  find_program(DG_CNN_MPIEXEC NAMES mpiexec mpirun)
  if(DG_CNN_MPIEXEC)
    add_test(NAME mnist_cnn_ddp
             COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/test_mnist_cnn_ddp.sh $<TARGET_FILE:mnist_cnn>
                     ${DG_MNIST_DIR} ${DG_CNN_MPIEXEC} --allow-run-as-root --oversubscribe --bind-to none
                     --mca btl self,vader)
    set_tests_properties(mnist_cnn_ddp PROPERTIES TIMEOUT 300 PROCESSORS 2
                         ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
  endif()
endif()
